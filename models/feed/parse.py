"""The parse entry points: feed bytes and a (format, mapping) in, postings and failed items out, streamed.

Every format takes the same guarded path: the prolog check (entities, internal DTD subsets), the
well-formedness pass, then the item reader (depth and per-item bounds), handing each item over as
soon as it closes. Only what an item becomes differs: RSS/Atom/RDF normalising
(``models/feed/syndication.py``) or a job XML mapping (``models/feed/mapping.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from models.feed.guard import MAX_DEPTH, REFUSED_DEPTH, _check_well_formed, _parse_guarded, _read_prolog, _TooDeep, is_blank
from models.feed.mapping import MAPPED_FORMATS, SYNDICATION_FORMATS, MappedCollector, MappingError, mapping_for
from models.feed.reader import _ItemReader, _Stop
from models.feed.records import FeedError, ItemFailure, JobPosting, ParsedFeed, clip
from models.feed.syndication import _KINDS, _Collector

# Root element local name -> job XML format, when the format is ``auto``.
_JOB_ROOTS = {"source": "indeed"}


def feed_kind(root_name: str, feed_format: str = "auto", has_mapping: bool = False) -> str:
    """What a document is read as: ``rss``/``atom``/``rdf``/``indeed``/``xml``; FeedError when it is none of them."""
    local = root_name.rpartition(":")[2]
    told = _KINDS.get(local)
    if feed_format in SYNDICATION_FORMATS:
        if told != feed_format:
            raise FeedError(f"not a {feed_format} feed: root element <{clip(root_name, 100)}> (the feed's format is "
                            f"{feed_format!r})")
        return told
    if feed_format in MAPPED_FORMATS:
        return feed_format
    if told is not None:
        return told
    if has_mapping:
        return "xml"
    if local in _JOB_ROOTS:
        return _JOB_ROOTS[local]
    hint = " (an HTML page, not a feed)" if local.lower() == "html" else ""
    raise FeedError(f"not a feed: root element <{clip(root_name, 100)}>{hint}")


def stream_feed(
    payload: bytes,
    source_url: str,
    source_name: str,
    on_item: Callable[[JobPosting | ItemFailure | None], bool],
    wanted: Callable[[int], bool] | None = None,
    *,
    feed_format: str = "auto",
    mapping: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Parse a feed's bytes, handing each item to ``on_item`` as it closes; return ``(kind, title)``.

    ``feed_format`` and ``mapping`` are the feed's (SPEC §3a; validated when saved, and again here).
    ``on_item`` returns False to stop reading (a cap on items). ``wanted(index)`` False: the item is
    counted but not normalised, and ``on_item`` gets None for it. Raises FeedError before the first
    item when the document as a whole is unusable (hostile, broken, not a feed, an invalid mapping);
    after items were handed out only when nesting passes ``MAX_DEPTH``. A bad item only becomes an
    ItemFailure and never stops the others.
    """
    if is_blank(payload):
        raise FeedError("empty body")
    root_name, _attrs = _read_prolog(payload)
    kind = feed_kind(root_name, feed_format, mapping is not None)
    collector: _Collector | MappedCollector
    if kind in MAPPED_FORMATS:
        try:
            job_mapping = mapping_for(kind, mapping)
        except MappingError as exc:
            raise FeedError(f"invalid mapping: {exc}") from None
        collector = MappedCollector(job_mapping, source_url, source_name, on_item, wanted,
                                    ("publisher",) if kind == "indeed" else ())
        item_depth = job_mapping.item_depth
    else:
        collector = _Collector(kind, root_name, source_url, source_name, on_item, wanted)
        item_depth = 3 if kind == "rss" else 2
    _check_well_formed(payload)
    try:
        skipping = (collector.skips, collector.skipped) if wanted is not None else (None, None)
        _parse_guarded(payload, _ItemReader(item_depth, collector, *skipping))
    except _Stop:
        pass  # on_item asked to stop
    except _TooDeep:
        raise FeedError(REFUSED_DEPTH.format(max_depth=MAX_DEPTH)) from None
    return kind, collector.title


def parse_feed(payload: bytes, source_url: str, source_name: str = "", *, feed_format: str = "auto",
               mapping: Mapping[str, Any] | None = None) -> ParsedFeed:
    """Parse a feed's bytes into normalised postings (all in memory): for tests, tools and a preview.

    Bytes (not str) so the encoding declared in the XML prolog (or a BOM) is honoured. Raises
    FeedError when the document as a whole is unusable; a bad item only becomes an ItemFailure in
    ``items``. The worker streams instead (:func:`stream_feed` in a parse process, ``agents/parsing.py``).
    """
    items: list[JobPosting | ItemFailure] = []

    def keep(item: JobPosting | ItemFailure | None) -> bool:
        if item is not None:
            items.append(item)
        return True

    kind, title = stream_feed(payload, source_url, source_name, keep, feed_format=feed_format, mapping=mapping)
    return ParsedFeed(kind=kind, title=title, items=items)
