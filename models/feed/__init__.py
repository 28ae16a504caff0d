"""Feed parsing and normalisation: raw XML bytes in, JobPostings (or per-item failures) out.

Pure code: no network, no database, no clock, no environment. The poller fetches the bytes;
everything downstream (dedupe, sink, API) only ever sees the records defined here. By concern:

* ``records``: JobPosting, ItemFailure, ParsedFeed, FeedError.
* ``hashing``: the dedupe key and content fingerprint (SPEC §2).
* ``dates``: feed dates to UTC.
* ``guard``: hostile or broken XML refused (entities, internal DTD subsets, depth), HTML sniffing.
* ``reader``: the streaming item reader (xmltodict's dict shapes, bounded per item).
* ``fields``: field bounds and text, markup and category normalisation shared by every format.
* ``syndication``: RSS 2.0, Atom and RSS 1.0/RDF items.
* ``mapping``: job XML feeds (``indeed``, ``xml``): formats and mappings, validated, and mapped items.
* ``parse``: the entry points, :func:`stream_feed` and :func:`parse_feed`.

Everything a feed controls is bounded before work scales with it, and no regular expression here
backtracks super-linearly (``tests/unit/test_regex_budget.py`` runs every one at 100 KB).
"""

from __future__ import annotations

from models.feed.dates import MAX_DATE_CHARS, parse_date
from models.feed.fields import MAX_CATEGORIES, MAX_DESCRIPTION_CHARS, MAX_LINE_CHARS
from models.feed.guard import (
    HTML_SNIFF_BYTES,
    MAX_DEPTH,
    REFUSED_DEPTH,
    REFUSED_DTD,
    REFUSED_ENTITIES,
    check_safe_xml,
    is_blank,
    looks_like_html,
)
from models.feed.hashing import FINGERPRINT_VERSION, dedupe_key, fingerprint
from models.feed.mapping import (
    FIELDS,
    FORMATS,
    INDEED_MAPPING,
    MAX_MAPPING_PATHS,
    MAX_PATH_STEPS,
    JobMapping,
    MappingError,
    parse_mapping,
    validate_feed_format,
)
from models.feed.parse import feed_kind, parse_feed, stream_feed
from models.feed.reader import MAX_ITEM_NODES, MAX_ITEM_TEXT_CHARS, TOO_MANY_NODES, TOO_MUCH_TEXT
from models.feed.records import MAX_KEY_CHARS, MAX_REASON_CHARS, FeedError, ItemFailure, JobPosting, ParsedFeed, clip

__all__ = [
    "FIELDS",
    "FINGERPRINT_VERSION",
    "FORMATS",
    "HTML_SNIFF_BYTES",
    "INDEED_MAPPING",
    "MAX_CATEGORIES",
    "MAX_DATE_CHARS",
    "MAX_DEPTH",
    "MAX_DESCRIPTION_CHARS",
    "MAX_ITEM_NODES",
    "MAX_ITEM_TEXT_CHARS",
    "MAX_KEY_CHARS",
    "MAX_LINE_CHARS",
    "MAX_MAPPING_PATHS",
    "MAX_PATH_STEPS",
    "MAX_REASON_CHARS",
    "REFUSED_DEPTH",
    "REFUSED_DTD",
    "REFUSED_ENTITIES",
    "TOO_MANY_NODES",
    "TOO_MUCH_TEXT",
    "FeedError",
    "ItemFailure",
    "JobMapping",
    "JobPosting",
    "MappingError",
    "ParsedFeed",
    "check_safe_xml",
    "clip",
    "dedupe_key",
    "feed_kind",
    "fingerprint",
    "is_blank",
    "looks_like_html",
    "parse_date",
    "parse_feed",
    "parse_mapping",
    "stream_feed",
    "validate_feed_format",
]
