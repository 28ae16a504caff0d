"""Feed parsing and normalisation: raw XML bytes in, JobPostings (or per-item failures) out.

Pure code: no network, no database, no clock, no environment. The poller fetches the
bytes; everything downstream (dedupe, sink, API) only ever sees the records defined here.

Design notes
------------
* Hostile XML is refused before the real parse: a first expat pass reads only the prolog
  (it stops at the root element) and rejects any entity declaration and any internal DTD
  subset (``<!DOCTYPE x [...]>``: ATTLIST defaults multiply the work of every element).
  The item parse refuses entity declarations again, as a second line of defence. A second
  expat pass without Python callbacks (C speed) checks the whole document is well-formed, so a
  broken document fails as a whole before :func:`stream_feed` hands out any item.
* The real parse streams items in xmltodict's dict shape (:class:`_ItemReader`, the
  ``xmltodict.parse(item_depth=...)`` algorithm specialised, and checked against xmltodict
  in the tests): each item is
  normalised as soon as it is closed and handed to a callback, so a 1,000,000-item feed
  never holds the whole XML tree (nor every item) in memory. Nesting deeper than
  ``MAX_DEPTH`` elements is refused (each level costs memory before any item closes).
* Everything a feed controls is bounded before work scales with it: single-line fields,
  guids, links and dates at ``MAX_LINE_CHARS`` (an item beyond is a failed item, "item too
  large"), descriptions at ``MAX_DESCRIPTION_CHARS``, categories at ``MAX_CATEGORIES``,
  failure keys and reasons are clipped, and no regular expression here backtracks
  super-linearly (``tests/unit/test_regex_budget.py`` runs every one at 100 KB).
* Namespaces are matched by the prefixes the feed declares, not by expat's namespace
  processing: WP Job Manager binds ``job_listing:`` to the *site's own URL*, so that prefix
  is only recognisable by name; for well-known URIs (Dublin Core, content, RDF, Atom) the
  prefix the feed actually declared for the URI is used, so ``<d:creator>`` with
  ``xmlns:d="http://purl.org/dc/elements/1.1/"`` works. Undeclared prefixes do not make
  the whole feed unusable either.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

import orjson

__all__ = [
    "FeedError",
    "ItemFailure",
    "JobPosting",
    "ParsedFeed",
    "check_safe_xml",
    "dedupe_key",
    "fingerprint",
    "parse_date",
    "parse_feed",
    "stream_feed",
]

FINGERPRINT_VERSION = "jobstream-fingerprint-v1"
"""Mixed into every fingerprint so a future change of the recipe is explicit, never silent."""

REFUSED_ENTITIES = "refused: XML declares entities (possible entity-expansion or XXE attack)"

_NS_DC = ("http://purl.org/dc/elements/1.1/",)
_NS_CONTENT = ("http://purl.org/rss/1.0/modules/content/",)
_NS_RDF = ("http://www.w3.org/1999/02/22-rdf-syntax-ns#",)
_NS_RSS1 = ("http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/")

# Root element local name -> feed kind.
_KINDS = {"rss": "rss", "RDF": "rdf", "feed": "atom"}

REFUSED_DTD = "refused: XML has an internal DTD subset (<!DOCTYPE ... [ ... ]>: declarations are not accepted)"
REFUSED_DEPTH = "refused: elements nested deeper than {max_depth} levels"

MAX_DEPTH = 100
"""Deepest element nesting accepted (real feeds: under 20, XHTML content included)."""
MAX_LINE_CHARS = 10_000
"""Longest raw text of a single-line field, guid, link, category or date."""
MAX_DESCRIPTION_CHARS = 1_000_000
"""Longest description (a posting travels as one Kafka message and one MongoDB document)."""
MAX_CATEGORIES = 1_000
MAX_ITEM_NODES = 100_000
"""Most elements and attributes, counted together, in one item (or other element at item depth).

A real posting has tens, an XHTML description a few thousand. Each costs the reader a dict entry or
a dict before the item can be normalised: up to about 400 bytes each in the worst shape measured
(an attribute on every element), so an item at the bound holds about 40 MB. Without it one item of
millions of small elements took 50 times the feed's size (a 15 MiB feed: 763 MB). Past it the rest
of the item is skipped, not built, and the item fails alone.
"""
MAX_ITEM_TEXT_CHARS = 4_000_000
"""Most characters of text and attribute values in one item, counted as the reader keeps them.

Room for a description at ``MAX_DESCRIPTION_CHARS`` written twice (``description`` and
``content:encoded``) and every other field at its own bound; far more than a posting can carry in
one Kafka message (``KAFKA_MAX_MESSAGE_BYTES``, 1 MiB by default). Up to 4 bytes a character in
memory, so an item at the bound holds at most about 16 MB of text. Past it the item fails alone.
"""
MAX_DATE_CHARS = 256
"""Longer date text is not a date: parse_date returns None before any pattern runs."""
MAX_KEY_CHARS = 500
MAX_REASON_CHARS = 1_000
HTML_SNIFF_BYTES = 4096

_BOM = b"\xef\xbb\xbf"
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what a bytes regex calls \s
_ENTITY_REF_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_MARKUP_CHARS = frozenset("<>&\"'")


# --------------------------------------------------------------------------- records


class FeedError(Exception):
    """The feed as a whole cannot be used (broken/hostile XML, not a feed, empty body).

    ``str()`` is a clear, human-readable message meant for ``import_logs.error``.
    """


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One item that could not become a JobPosting; the run records it and carries on.

    ``key`` and ``reason`` are clipped (``MAX_KEY_CHARS``, ``MAX_REASON_CHARS``): they come
    from the feed and end up in ``import_logs``.
    """

    key: str
    reason: str
    stage: str = "normalise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", clip(self.key, MAX_KEY_CHARS))
        object.__setattr__(self, "reason", clip(self.reason, MAX_REASON_CHARS))


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class JobPosting:
    """One normalised job posting: the unit that travels through Kafka into ``jobs``.

    ``dedupe_key`` and ``fingerprint`` are derived fields; use :meth:`build` (or
    :meth:`from_document`) rather than the constructor so they are always consistent.
    """

    dedupe_key: str
    source_url: str
    source_name: str
    external_id: str
    title: str
    company: str
    location: str
    job_type: str
    categories: tuple[str, ...]
    region: str
    url: str
    description: str
    published_at: datetime | None
    fingerprint: str

    @classmethod
    def build(
        cls,
        *,
        source_url: str,
        external_id: str,
        source_name: str = "",
        title: str = "",
        company: str = "",
        location: str = "",
        job_type: str = "",
        categories: Iterable[str] = (),
        region: str = "",
        url: str = "",
        description: str = "",
        published_at: datetime | None = None,
    ) -> JobPosting:
        """Create a posting, computing its dedupe key and content fingerprint."""
        cats = tuple(categories)
        published = _to_utc(published_at) if published_at is not None else None
        return cls(
            dedupe_key=dedupe_key(source_url, external_id),
            source_url=source_url,
            source_name=source_name,
            external_id=external_id,
            title=title,
            company=company,
            location=location,
            job_type=job_type,
            categories=cats,
            region=region,
            url=url,
            description=description,
            published_at=published,
            fingerprint=_fingerprint(
                title,
                company,
                location,
                job_type,
                cats,
                region,
                url,
                description,
                published.isoformat() if published is not None else "",
            ),
        )

    def to_document(self) -> dict[str, Any]:
        """The SPEC's camelCase shape (``jobs`` collection, ``jobs.parsed`` values)."""
        return {
            "dedupeKey": self.dedupe_key,
            "sourceUrl": self.source_url,
            "sourceName": self.source_name,
            "externalId": self.external_id,
            "title": self.title,
            "company": self.company,
            "location": self.location,
            "jobType": self.job_type,
            "categories": list(self.categories),
            "region": self.region,
            "url": self.url,
            "description": self.description,
            "publishedAt": self.published_at,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> JobPosting:
        """Inverse of :meth:`to_document`; extra keys (``runId``, ``_id``, ...) are ignored.

        ``publishedAt`` may be a datetime (naive means UTC, as pymongo returns it) or an
        ISO-8601 string (it travels as JSON through Kafka). ``dedupeKey``/``fingerprint``
        are taken from the document when present (they were computed by :meth:`build`)
        and computed when absent. Raises ValueError on a malformed document.
        """
        if not isinstance(doc, Mapping):
            raise ValueError(f"job document must be a mapping, got {type(doc).__name__}")
        source_url = _doc_str(doc, "sourceUrl", required=True)
        external_id = _doc_str(doc, "externalId", required=True)
        raw_categories = doc.get("categories")
        if raw_categories is None:
            categories: tuple[str, ...] = ()
        elif isinstance(raw_categories, list | tuple) and all(isinstance(c, str) for c in raw_categories):
            categories = tuple(raw_categories)
        else:
            raise ValueError("job document field 'categories' must be a list of strings")
        built = cls.build(
            source_url=source_url,
            external_id=external_id,
            source_name=_doc_str(doc, "sourceName"),
            title=_doc_str(doc, "title"),
            company=_doc_str(doc, "company"),
            location=_doc_str(doc, "location"),
            job_type=_doc_str(doc, "jobType"),
            categories=categories,
            region=_doc_str(doc, "region"),
            url=_doc_str(doc, "url"),
            description=_doc_str(doc, "description"),
            published_at=_doc_published(doc.get("publishedAt")),
        )
        key = doc.get("dedupeKey")
        fp = doc.get("fingerprint")
        if (isinstance(key, str) and key) or (isinstance(fp, str) and fp):
            return cls(
                dedupe_key=key if isinstance(key, str) and key else built.dedupe_key,
                source_url=built.source_url,
                source_name=built.source_name,
                external_id=built.external_id,
                title=built.title,
                company=built.company,
                location=built.location,
                job_type=built.job_type,
                categories=built.categories,
                region=built.region,
                url=built.url,
                description=built.description,
                published_at=built.published_at,
                fingerprint=fp if isinstance(fp, str) and fp else built.fingerprint,
            )
        return built


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed feed: its kind, title and items in document order.

    The index of an entry in ``items`` is that item's sequence number in the run.
    """

    kind: str
    title: str
    items: list[JobPosting | ItemFailure]


# --------------------------------------------------------------------------- hashing


def dedupe_key(source_url: str, external_id: str) -> str:
    """``sha1(sourceUrl + "|" + externalId)`` as lower-case hex (SPEC §2)."""
    data = f"{source_url}|{external_id}".encode("utf-8", "surrogatepass")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def fingerprint(fields: Mapping[str, Any]) -> str:
    """Stable content hash of a posting given its camelCase fields (SPEC §2).

    Only the content fields count (title, company, location, jobType, categories, region,
    url, description, publishedAt): identity and bookkeeping keys (sourceName, dedupeKey,
    version, runId, ...) and the mapping's key order are ignored. Categories are compared
    as a set (a feed reshuffling them is not an edit). publishedAt may be a datetime, an
    ISO string or None; equal instants give equal fingerprints.
    """
    raw_categories = fields.get("categories") or ()
    if isinstance(raw_categories, str):
        raw_categories = (raw_categories,)
    return _fingerprint(
        _field_str(fields.get("title")),
        _field_str(fields.get("company")),
        _field_str(fields.get("location")),
        _field_str(fields.get("jobType")),
        [str(c) for c in raw_categories],
        _field_str(fields.get("region")),
        _field_str(fields.get("url")),
        _field_str(fields.get("description")),
        _published_iso(fields.get("publishedAt")),
    )


def _fingerprint(
    title: str,
    company: str,
    location: str,
    job_type: str,
    categories: Iterable[str],
    region: str,
    url: str,
    description: str,
    published_iso: str,
) -> str:
    """Hash a fixed-order JSON array: unambiguous, and identical in every process.

    The bytes are those of the stdlib encoder below (``ensure_ascii=False``, compact). orjson writes
    the same bytes for every string without a lone surrogate, in a fifth of the time (checked for
    every code point in ``tests/unit/test_feed.py``); a lone surrogate, which orjson refuses, takes
    the stdlib path.
    """
    fields = [FINGERPRINT_VERSION, title, company, location, job_type, sorted(categories), region, url, description,
              published_iso]
    try:
        blob = orjson.dumps(fields)
    except TypeError:
        blob = _FP_ENCODER.encode(fields).encode("utf-8", "surrogatepass")
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


_FP_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _field_str(value: Any) -> str:
    return "" if value is None else str(value)


def _published_iso(value: Any) -> str:
    """Canonical ISO form of a publishedAt value, so datetime and JSON string agree."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return _to_utc(value).isoformat()
    text = str(value)
    parsed = parse_date(text)
    return parsed.isoformat() if parsed is not None else text.strip()


# --------------------------------------------------------------------------- dates

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
# Minutes east of UTC. RFC 822 names plus common unambiguous ones seen in real feeds;
# an unknown name is read as UTC rather than losing the date.
_ZONES = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "WET": 0,
    "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
    "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
    "AKST": -540, "AKDT": -480, "HST": -600,
    "BST": 60, "CET": 60, "WEST": 60, "CEST": 120, "EET": 120, "EEST": 180, "MSK": 180,
    "JST": 540, "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
}  # fmt: skip
# Linear by construction: the weekday is bounded ({1,20}: an unbounded run of letters is
# quadratic under search), and the tail's whitespace runs are never adjacent to each other
# (``\s*(zone)?\s*\Z`` backtracks quadratically on a long run of spaces before a stray char).
_RFC822_RE = re.compile(
    r"(?:[A-Za-z]{1,20},?\s*)?(\d{1,2})[\s-]+([A-Za-z]{3,9})\.?[\s-]+(\d{2,4})"
    r"(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"
    r"\s*(?:(?:([+-])(\d{2}):?(\d{2})|([A-Za-z]{1,5}))\s*)?\Z"
)


def parse_date(value: str) -> datetime | None:
    """RFC 822 or ISO 8601 text -> aware UTC datetime (millisecond precision); else None.

    An unparseable date is not an item failure: the posting is kept without one.
    Precision is cut to milliseconds because that is what BSON stores, so a posting read
    back from MongoDB hashes to the same fingerprint.
    """
    s = value.strip()
    if not s or len(s) > MAX_DATE_CHARS:
        return None
    try:
        if len(s) >= 8 and s[:4].isdigit():
            return _to_utc(datetime.fromisoformat(s))
        m = _RFC822_RE.match(s)
        if m is not None:
            return _from_rfc822(m)
        return _to_utc(parsedate_to_datetime(s))
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _from_rfc822(m: re.Match[str]) -> datetime:
    """Build the UTC datetime straight from the regex groups (the hot path of big feeds)."""
    day, mon, year, hh, mm, ss, sign, oh, om, zone = m.groups()
    month = _MONTHS.get(mon[:3].lower())
    if month is None:
        raise ValueError(f"unknown month {mon!r}")
    y = int(year)
    if len(year) == 2:
        y += 2000 if y < 50 else 1900
    if sign is not None:
        offset = int(oh) * 60 + int(om)
        if sign == "-":
            offset = -offset
    else:
        offset = _ZONES.get(zone.upper(), 0) if zone else 0
    dt = datetime(y, month, int(day), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC)
    return dt - timedelta(minutes=offset) if offset else dt


def _to_utc(dt: datetime) -> datetime:
    """Aware UTC at millisecond precision; a naive datetime is taken to be UTC already."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if dt.microsecond % 1000:
        dt = dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)
    return dt


# --------------------------------------------------------------------------- documents


def _doc_str(doc: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = doc.get(key)
    if value is None:
        if required:
            raise ValueError(f"job document lacks {key!r}")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"job document field {key!r} must be a string")
    if required and not value:
        raise ValueError(f"job document field {key!r} is empty")
    return value


def _doc_published(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        parsed = parse_date(value)
        if parsed is None:
            raise ValueError(f"job document field 'publishedAt' is not a date: {value!r}")
        return parsed
    raise ValueError("job document field 'publishedAt' must be a datetime, string or null")


# --------------------------------------------------------------------------- safety


class _EntityDeclared(Exception):
    pass


class _RootReached(Exception):
    pass


class _InternalSubset(Exception):
    pass


class _TooDeep(Exception):
    pass


def check_safe_xml(payload: bytes) -> None:
    """Refuse XML that declares entities (billion laughs, XXE) or has an internal DTD subset.

    Uses expat itself on the prolog only (it stops at the root element), so the check
    sees exactly what the real parser sees, whatever the encoding, comments or quoting.
    Raises FeedError when entities are declared, an internal subset is present (ATTLIST
    defaults are an amplification: every element gets the declared attributes) or the
    prolog is not well-formed.
    """
    _read_prolog(payload)


def _read_prolog(payload: bytes) -> tuple[str, dict[str, str]]:
    """Return the root element's name and attributes, refusing entity declarations and internal subsets.

    An entity declaration is reported as such (the more precise reason); any other internal
    subset is refused when its end is reached (parsing declarations is linear; only their
    use in the body amplifies).
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root: list[tuple[str, dict[str, str]]] = []
    subset: list[bool] = []

    def on_entity(*_args: Any) -> None:
        raise _EntityDeclared

    def on_external(*_args: Any) -> int:
        raise _EntityDeclared

    def on_doctype(_name: str, _system_id: str | None, _public_id: str | None, has_internal_subset: int) -> None:
        subset.append(bool(has_internal_subset))

    def on_doctype_end() -> None:
        if any(subset):
            raise _InternalSubset

    def on_start(name: str, attrs: dict[str, str]) -> None:
        root.append((name, attrs))
        raise _RootReached

    parser.EntityDeclHandler = on_entity
    parser.ExternalEntityRefHandler = on_external
    parser.StartDoctypeDeclHandler = on_doctype
    parser.EndDoctypeDeclHandler = on_doctype_end
    parser.StartElementHandler = on_start
    try:
        parser.Parse(payload, True)
    except _RootReached:
        return root[0]
    except _EntityDeclared:
        raise FeedError(REFUSED_ENTITIES) from None
    except _InternalSubset:
        raise FeedError(REFUSED_DTD) from None
    except expat.ExpatError as exc:
        raise _parse_error(payload, exc) from exc
    except (LookupError, ValueError) as exc:  # the declared encoding: unknown, or multi-byte (UTF-32, UTF-7...)
        raise FeedError(f"XML parse error: {clip(str(exc), 200)}") from exc
    raise FeedError("XML parse error: no root element")  # pragma: no cover - expat raises


def _check_well_formed(payload: bytes) -> None:
    """The whole document through expat with no Python callback (C speed): FeedError if broken.

    Run before any item is handed out, so a truncated or otherwise broken feed fails as a
    whole instead of after some of its items were published. Entities and internal subsets
    were refused by the prolog check already; no external entity is ever loaded.
    """
    _parse_guarded(payload)


def _parse_guarded(payload: bytes, reader: _ItemReader | None = None) -> None:
    """The whole document through expat, with ``reader``'s handlers if given: FeedError if broken.

    An entity declaration is refused here too (never reached after the prolog check: a further
    guard); no external entity is ever loaded. Exceptions of the reader's own pass through.
    """
    # No interning of names: pyexpat keeps every distinct element and attribute name it interned for the
    # whole parse (about 110 bytes each), so a feed of millions of distinct names grew past the item bounds.
    parser = expat.ParserCreate(intern=None)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    if reader is not None:
        reader.attach(parser)

    def on_entity(*_args: Any) -> None:
        raise _EntityDeclared

    parser.EntityDeclHandler = on_entity
    try:
        parser.Parse(payload, True)
    except _EntityDeclared:
        raise FeedError(REFUSED_ENTITIES) from None
    except expat.ExpatError as exc:
        raise _parse_error(payload, exc) from exc


_EXPAT_NO_MEMORY = expat.errors.codes[expat.errors.XML_ERROR_NO_MEMORY]


def _parse_error(payload: bytes, exc: expat.ExpatError) -> FeedError:
    """The feed's error for an expat error; expat out of memory is a MemoryError (the parse's limit, not the feed's fault)."""
    if exc.code == _EXPAT_NO_MEMORY:
        raise MemoryError("expat: out of memory") from exc
    if looks_like_html(payload):
        return FeedError(f"not a feed: looks like an HTML page (XML parse error: {exc})")
    return FeedError(f"XML parse error: {exc}")


def is_blank(payload: bytes) -> bool:
    """Nothing but an optional UTF-8 BOM and ASCII whitespace."""
    body = payload[len(_BOM):] if payload.startswith(_BOM) else payload
    return not body or body.isspace()


def looks_like_html(payload: bytes) -> bool:
    """An HTML page (``<!doctype html>`` or ``<html>``) after an optional BOM, XML declaration and comments.

    Plain string scanning over the first ``HTML_SNIFF_BYTES`` bytes: linear whatever the input
    (the regex this replaces backtracked exponentially on ``<!---->`` repeated).
    """
    head = payload[:HTML_SNIFF_BYTES]
    pos = len(_BOM) if head.startswith(_BOM) else 0

    def skip_space(at: int) -> int:
        while at < len(head) and head[at] in _ASCII_SPACE:
            at += 1
        return at

    pos = skip_space(pos)
    if head.startswith(b"<?xml", pos):
        end = head.find(b">", pos)
        if end < 0:
            return False
        pos = skip_space(end + 1)
    while head.startswith(b"<!--", pos):
        end = head.find(b"-->", pos + 4)
        if end < 0:
            return False
        pos = skip_space(end + 3)
    lowered = head[pos:pos + 16].lower()
    if lowered.startswith(b"<!doctype"):
        after = skip_space(pos + 9)
        return after > pos + 9 and head[after:after + 4].lower() == b"html" and _ends_tag_name(head, after + 4)
    return lowered.startswith(b"<html") and _ends_tag_name(head, pos + 5)


def _ends_tag_name(head: bytes, at: int) -> bool:
    return at < len(head) and head[at] in _ASCII_SPACE + b">"


# --------------------------------------------------------------------------- text helpers


def _text(value: Any) -> str:
    """Text of an xmltodict value: str, ``{'#text': ...}``, or the first non-empty of a list."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict):
        t = value.get("#text")
        return t if isinstance(t, str) else ""
    if isinstance(value, list):
        for v in value:
            t = _text(v)
            if t:
                return t
    return ""


class _TooLarge(Exception):
    """A field of an item beyond its bound: the item fails ("item too large"), the rest go on."""

    def __init__(self, field: str, size: int, limit: int, unit: str = "characters") -> None:
        super().__init__(f"item too large: {field} has {size:,} {unit} (limit {limit:,})")


def _bounded(field: str, s: str, limit: int = MAX_LINE_CHARS) -> str:
    """``s`` unchanged, checked before anything runs over it."""
    if len(s) > limit:
        raise _TooLarge(field, len(s), limit)
    return s


def _line(s: str, field: str = "a text field") -> str:
    """Single-line field: HTML entities decoded once, whitespace collapsed (bounded first)."""
    if len(s) > MAX_LINE_CHARS:
        raise _TooLarge(field, len(s), MAX_LINE_CHARS)
    if "&" in s:
        s = html.unescape(s)
    return " ".join(s.split())


def _decode_entity(m: re.Match[str]) -> str:
    ref = m.group()
    ch = html.unescape(ref)
    return ref if ch in _MARKUP_CHARS else ch


def _markup(value: Any) -> str:
    """HTML description: kept as markup, with character entities (``&ndash;``) decoded.

    ``&lt; &gt; &amp; &quot; &#39;`` stay encoded: decoding them would turn escaped text
    into live markup. Inline XHTML children (Atom ``type="xhtml"``) are re-serialised.
    """
    if isinstance(value, list):
        for v in value:
            s = _markup(v)
            if s:
                return s
        return ""
    if isinstance(value, dict):
        children = {k: v for k, v in value.items() if k[0] not in "@#"}
        if children:
            s = _unparse(children)
            text = value.get("#text")
            if isinstance(text, str):
                s = f"{text}{s}"
        else:
            s = _text(value)
    elif isinstance(value, str):
        s = value
    else:
        return ""
    s = s.strip()
    if len(s) > MAX_DESCRIPTION_CHARS:
        raise _TooLarge("description", len(s), MAX_DESCRIPTION_CHARS)
    if "&" in s:
        s = _ENTITY_REF_RE.sub(_decode_entity, s)
    return s


def _unparse(children: Mapping[str, Any]) -> str:
    """Inline markup back to text: ``xmltodict.unparse(children, full_document=False)`` for the values
    the item reader builds (str, None, dicts of those, lists of those), a quarter of its cost.

    Children in order, each element's children before its text, text and attributes escaped as
    ``xml.sax.saxutils`` does; ``tests/unit/test_item_reader.py`` compares it with xmltodict.
    """
    out: list[str] = []
    for name, value in children.items():
        _unparse_element(name, value, out)
    return "".join(out)


def _unparse_element(name: str, value: Any, out: list[str]) -> None:
    for v in value if type(value) is list else (value,):
        if v is None:
            out.append(f"<{name}></{name}>")
        elif type(v) is str:
            out.append(f"<{name}>{_escape(v)}</{name}>")
        else:
            attrs = "".join(f" {key[1:]}={quoteattr(attr)}" for key, attr in v.items() if key[0] == "@")
            out.append(f"<{name}{attrs}>")
            for key, child in v.items():
                if key[0] != "@" and key != "#text":
                    _unparse_element(key, child, out)
            text = v.get("#text")
            if text:
                out.append(_escape(text))
            out.append(f"</{name}>")


def _escape(text: str) -> str:
    """``xml.sax.saxutils.escape`` without its entity table (the most frequent call of ``_unparse``)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    return text


def _categories(*values: Any) -> tuple[str, ...]:
    """Category names from strings, ``{'#text'}``/``{'@term'}`` dicts or lists, de-duplicated."""
    seen: dict[str, None] = {}
    for value in values:
        if value is None:
            continue
        for v in value if isinstance(value, list) else (value,):
            if isinstance(v, str):
                name = v
            elif isinstance(v, dict):
                raw = v.get("@term") or v.get("#text") or v.get("@label")
                name = raw if isinstance(raw, str) else ""
            else:
                continue
            name = _line(name, "a category")
            if name:
                seen[name] = None
                if len(seen) > MAX_CATEGORIES:
                    raise _TooLarge("categories", len(seen), MAX_CATEGORIES, "entries")
    return tuple(seen)


def _rss_link(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        raw = value.get("#text") or value.get("@href")
        return raw.strip() if isinstance(raw, str) else ""
    if isinstance(value, list):
        for v in value:
            s = _rss_link(v)
            if s:
                return s
    return ""


def _atom_link(value: Any) -> str:
    """The ``rel="alternate"`` (or rel-less) href; else the first href or text link."""
    fallback = ""
    for v in value if isinstance(value, list) else (value,):
        if isinstance(v, dict):
            href = v.get("@href")
            if not isinstance(href, str) or not href.strip():
                continue
            if v.get("@rel", "alternate") == "alternate":
                return href.strip()
            if not fallback:
                fallback = href.strip()
        elif isinstance(v, str) and v.strip() and not fallback:
            fallback = v.strip()
    return fallback


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Keys:
    """The xmltodict keys of the fields we read, as this particular feed spells them."""

    item: str
    channel: str
    title: str
    link: str
    guid: str
    description: str
    pub_date: str
    category: str
    content_encoded: str
    dc_creator: str
    dc_date: str
    dc_subject: str
    jl_company: str
    jl_location: str
    jl_job_type: str
    jl_region: str
    # Atom
    id: str
    author: str
    name: str
    content: str
    summary: str
    published: str
    updated: str
    issued: str
    modified: str

    @classmethod
    def resolve(cls, kind: str, root_name: str, ancestors: Iterable[Mapping[str, str] | None]) -> _Keys:
        """Map well-known namespace URIs to the prefixes this feed declared for them."""
        declared: dict[str, str] = {}
        for attrs in ancestors:
            for attr, uri in (attrs or {}).items():
                if attr == "xmlns":
                    declared.setdefault(uri, "")
                elif attr.startswith("xmlns:"):
                    declared.setdefault(uri, attr[6:])

        def ns(uris: tuple[str, ...], conventional: str) -> str:
            prefix = next((declared[u] for u in uris if u in declared), conventional)
            return f"{prefix}:" if prefix else ""

        dc = ns(_NS_DC, "dc")
        rdf = ns(_NS_RDF, "rdf")
        if kind == "atom":
            # Atom elements share the root's prefix (usually the default namespace).
            p = root_name[: root_name.index(":") + 1] if ":" in root_name else ""
        elif kind == "rdf":
            p = ns(_NS_RSS1, "")
        else:
            p = ""
        jl = "job_listing:"  # WP Job Manager binds it to the site URL: match by prefix.
        return cls(
            item=f"{p}entry" if kind == "atom" else f"{p}item",
            channel=f"{p}channel",
            title=f"{p}title",
            link=f"{p}link",
            guid=f"@{rdf}about" if kind == "rdf" else "guid",
            description=f"{p}description",
            pub_date=f"{p}pubDate",
            category=f"{p}category",
            content_encoded=f"{ns(_NS_CONTENT, 'content')}encoded",
            dc_creator=f"{dc}creator",
            dc_date=f"{dc}date",
            dc_subject=f"{dc}subject",
            jl_company=f"{jl}company",
            jl_location=f"{jl}location",
            jl_job_type=f"{jl}job_type",
            jl_region=f"{jl}region",
            id=f"{p}id",
            author=f"{p}author",
            name=f"{p}name",
            content=f"{p}content",
            summary=f"{p}summary",
            published=f"{p}published",
            updated=f"{p}updated",
            issued=f"{p}issued",
            modified=f"{p}modified",
        )


class _Collector:
    """The item reader's callback: normalises each item as soon as it is closed."""

    __slots__ = ("kind", "root_name", "source_url", "source_name", "keys", "title",
                 "feed_author", "count", "on_item", "wanted")  # fmt: skip

    def __init__(self, kind: str, root_name: str, source_url: str, source_name: str,
                 on_item: Callable[[JobPosting | ItemFailure | None], bool], wanted: Callable[[int], bool] | None) -> None:
        self.kind = kind
        self.root_name = root_name
        self.source_url = source_url
        self.source_name = source_name
        self.keys: _Keys | None = None
        self.title = ""
        self.feed_author = ""
        self.count = 0
        self.on_item = on_item
        self.wanted = wanted

    def __call__(self, ancestors: list[tuple[str, dict[str, str] | None]], name: str, value: Any) -> bool:
        keys = self.keys
        if keys is None:
            keys = self.keys = _Keys.resolve(self.kind, self.root_name, (attrs for _, attrs in ancestors))
        kind = self.kind
        if name == keys.item:
            if kind != "rss" or ancestors[1][0] == "channel":
                item = self._normalise(value, self.count, keys)  # a wanted item: the reader skipped the others
                self.count += 1
                return self.on_item(item)
        elif name == keys.title:
            if not self.title and (kind != "rss" or ancestors[1][0] == "channel"):
                self.title = _line(clip(_text(value), MAX_LINE_CHARS))
        elif kind == "rdf" and name == keys.channel and isinstance(value, dict):
            self.title = self.title or _line(clip(_text(value.get(keys.title)), MAX_LINE_CHARS))
        elif kind == "atom" and name == keys.author and not self.feed_author:
            try:
                self.feed_author = _author_name(value, keys.name)
            except _TooLarge:
                self.feed_author = ""  # an oversized feed-level author is ignored, not fatal
        return True

    def skips(self, ancestors: list[tuple[str, dict[str, str] | None]], name: str) -> bool:
        """Whether the element opening at item depth is an item ``wanted`` leaves out: then it is never built."""
        keys = self.keys
        if keys is None:
            keys = self.keys = _Keys.resolve(self.kind, self.root_name, (attrs for _, attrs in ancestors))
        if name != keys.item or (self.kind == "rss" and ancestors[1][0] != "channel"):
            return False
        return self.wanted is not None and not self.wanted(self.count)

    def skipped(self) -> bool:
        """A left-out item closed: counted, and ``on_item`` gets None for it."""
        self.count += 1
        return self.on_item(None)

    def _normalise(self, item: Any, index: int, k: _Keys) -> JobPosting | ItemFailure:
        if not isinstance(item, dict):
            if type(item) is _Oversized:  # past the reader's bounds: only the part before them was built
                partial = item.partial
                key = _best_key(partial, index, k) if isinstance(partial, dict) else f"item[{index}]"
                return ItemFailure(key=key, reason=item.reason, stage="parse")
            return ItemFailure(key=f"item[{index}]", reason="malformed item: no child elements")
        try:
            if self.kind == "atom":
                return self._atom(item, index, k)
            return self._rss(item, index, k)
        except _TooLarge as exc:
            return ItemFailure(key=_best_key(item, index, k), reason=str(exc))
        except Exception as exc:  # one bad item must never stop the rest
            return ItemFailure(
                key=_best_key(item, index, k),
                reason=f"could not normalise item: {type(exc).__name__}: {exc}",
            )

    def _rss(self, item: dict[str, Any], index: int, k: _Keys) -> JobPosting | ItemFailure:
        get = item.get
        guid_value = get(k.guid)
        external_id = _bounded("guid", _text(guid_value)).strip()
        link = _bounded("link", _rss_link(get(k.link)))
        title = _line(_text(get(k.title)), "title")
        if not external_id:
            external_id = link
            if not external_id:
                return ItemFailure(key=title or f"item[{index}]", reason="missing guid and link")
        elif (
            not link
            and _is_url(external_id)
            and (
                self.kind == "rdf"
                or not isinstance(guid_value, dict)
                or guid_value.get("@isPermaLink", "true").strip().lower() != "false"
            )
        ):
            link = external_id  # a permalink guid / rdf:about is the item's URL
        content = get(k.content_encoded)
        description = _markup(content) if content is not None else ""
        if not description:
            description = _markup(get(k.description))
        date_text = _bounded("date", _text(get(k.pub_date)) or _text(get(k.dc_date)))
        return JobPosting.build(
            source_url=self.source_url,
            source_name=self.source_name,
            external_id=external_id,
            title=title,
            company=_line(_text(get(k.jl_company)), "company") or _line(_text(get(k.dc_creator)), "company"),
            location=_line(_text(get(k.jl_location)), "location"),
            job_type=_line(_text(get(k.jl_job_type)), "jobType"),
            categories=_categories(get(k.category), get(k.dc_subject)),
            region=_line(_text(get(k.jl_region)), "region"),
            url=link,
            description=description,
            published_at=parse_date(date_text) if date_text else None,
        )

    def _atom(self, entry: dict[str, Any], index: int, k: _Keys) -> JobPosting | ItemFailure:
        get = entry.get
        link = _bounded("link", _atom_link(get(k.link)))
        external_id = _bounded("guid", _text(get(k.id))).strip() or link
        title = _line(_text(get(k.title)), "title")
        if not external_id:
            return ItemFailure(key=title or f"item[{index}]", reason="missing guid and link")
        content = get(k.content)
        description = _markup(content) if content is not None else ""
        if not description:
            description = _markup(get(k.summary))
        published = None
        for key in (k.published, k.updated, k.issued, k.modified, k.dc_date):
            text = _bounded("date", _text(get(key)))
            if text:
                published = parse_date(text)
                if published is not None:
                    break
        company = (
            _line(_text(get(k.jl_company)), "company")
            or _author_name(get(k.author), k.name)
            or _line(_text(get(k.dc_creator)), "company")
            or self.feed_author
        )
        return JobPosting.build(
            source_url=self.source_url,
            source_name=self.source_name,
            external_id=external_id,
            title=title,
            company=company,
            location=_line(_text(get(k.jl_location)), "location"),
            job_type=_line(_text(get(k.jl_job_type)), "jobType"),
            categories=_categories(get(k.category), get(k.dc_subject)),
            region=_line(_text(get(k.jl_region)), "region"),
            url=link or (external_id if _is_url(external_id) else ""),
            description=description,
            published_at=published,
        )


def _author_name(value: Any, name_key: str) -> str:
    for v in value if isinstance(value, list) else (value,):
        if isinstance(v, dict):
            name = _line(_text(v.get(name_key)), "author")
        else:
            name = _line(_text(v), "author")
        if name:
            return name
    return ""


def _best_key(item: Mapping[str, Any], index: int, k: _Keys) -> str:
    """Best identifier for a failure report: guid/id, link, title, else the position."""
    for key in (k.guid, k.id, k.link, k.title):
        try:
            value = item.get(key)
            s = _atom_link(value) if key == k.link else _text(value)
        except Exception:  # noqa: S112 - reporting must not fail on a hostile item
            continue
        s = s.strip()
        if s:
            return s
    return f"item[{index}]"


class _Stop(Exception):
    """Raised through expat when the item callback asks to stop reading."""


@dataclass(frozen=True, slots=True)
class _Oversized:
    """What the item reader hands over for an item past ``MAX_ITEM_NODES`` or ``MAX_ITEM_TEXT_CHARS``.

    ``partial`` is what was built of the item before the bound (at most the bound's worth): enough for
    the failure's key when its guid came first.
    """

    reason: str
    partial: Any


TOO_MANY_NODES = f"item too large: more than {MAX_ITEM_NODES:,} elements and attributes"
TOO_MUCH_TEXT = f"item too large: more than {MAX_ITEM_TEXT_CHARS:,} characters of text"


class _ItemReader:
    """expat handlers that build each item as ``xmltodict.parse(item_depth=...)`` builds it, and hand it over.

    The dict shapes are xmltodict's with this module's settings (attributes as ``@name``, text as
    ``#text``, repeated children as lists, inner text stripped, no namespace processing), so
    normalising, and with it every fingerprint, is the same as with xmltodict;
    ``tests/unit/test_item_reader.py`` checks that against xmltodict itself on every sample feed
    and on generated documents. Specialised for this one configuration, it costs about half of
    xmltodict's general handler per element (measured in the parse process: 17.5 against 9 µs per
    posting of the bench feed), and refuses nesting deeper than ``MAX_DEPTH`` in the same call
    (each open level holds a dict and a stack entry before any item closes).

    Each element at item depth is bounded while it is built: past ``MAX_ITEM_NODES`` elements and
    attributes or ``MAX_ITEM_TEXT_CHARS`` characters, what was built is dropped, the rest of it is
    walked without building anything, and ``on_item`` gets an :class:`_Oversized` for it. So memory
    is bounded per item, not by the feed's size. Text outside items is never kept (nothing uses it).

    ``on_item(ancestors, name, value)`` gets each element at ``item_depth`` when it closes:
    ``ancestors`` are the ``(name, attributes or None)`` of the elements above it.
    """

    __slots__ = ("item_depth", "on_item", "skips", "on_skipped", "skipping", "depth", "ancestors", "stack", "item", "data",
                 "nodes", "chars", "oversized")  # fmt: skip

    def __init__(self, item_depth: int, on_item: Callable[[list[tuple[str, dict[str, str] | None]], str, Any], bool],
                 skips: Callable[[list[tuple[str, dict[str, str] | None]], str], bool] | None = None,
                 on_skipped: Callable[[], bool] | None = None) -> None:
        self.item_depth = item_depth
        self.on_item = on_item
        # ``skips(ancestors, name)`` True at an element opening at item depth: nothing of it is built,
        # and ``on_skipped()`` is called when it closes (a parse lane walking past another lane's items).
        self.skips = skips
        self.on_skipped = on_skipped
        self.skipping = False
        self.depth = 0
        self.ancestors: list[tuple[str, dict[str, str] | None]] = []
        self.stack: list[tuple[Any, list[str]]] = []
        self.item: Any = None
        self.data: list[str] = []
        self.nodes = 0  # elements and attributes of the element at item depth being built
        self.chars = 0  # and characters of its text and attribute values
        self.oversized: _Oversized | None = None  # set when it passed a bound: the rest of it is skipped

    def attach(self, parser: Any) -> None:
        parser.ordered_attributes = False
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.characters

    def start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self.depth = self.depth + 1
        if depth < self.item_depth:
            self.ancestors.append((name, attrs or None))
            return
        if depth > MAX_DEPTH:
            raise _TooDeep
        if self.skipping:
            return
        if depth == self.item_depth:
            if self.skips is not None and self.skips(self.ancestors, name):
                self.skipping = True
                return
            self.nodes = self.chars = 0
        if attrs:
            self.nodes += 1 + len(attrs)
            self.chars += sum(map(len, attrs.values()))
            if self.nodes > MAX_ITEM_NODES or self.chars > MAX_ITEM_TEXT_CHARS:
                self._too_large(TOO_MANY_NODES if self.nodes > MAX_ITEM_NODES else TOO_MUCH_TEXT)
                return
            self.stack.append((self.item, self.data))
            self.item = {"@" + key: value for key, value in attrs.items()}
        else:
            nodes = self.nodes = self.nodes + 1
            if nodes > MAX_ITEM_NODES:
                self._too_large(TOO_MANY_NODES)
                return
            self.stack.append((self.item, self.data))
            self.item = None
        self.data = []

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if self.skipping:
            if depth == self.item_depth:
                self.skipping = False
                oversized, self.oversized = self.oversized, None
                if oversized is not None:
                    if not self.on_item(self.ancestors, name, oversized):
                        raise _Stop
                elif self.on_skipped is not None and not self.on_skipped():
                    raise _Stop
            return
        if depth > self.item_depth:  # a child inside an item: attach it to its parent
            data, value = self.data, self.item
            self.item, self.data = self.stack.pop()
            text = "".join(data).strip() or None if data else None
            if value is None:
                value = text
            elif text:
                value["#text"] = text
            parent = self.item
            if parent is None:
                self.item = {name: value}
            elif name in parent:
                previous = parent[name]
                if type(previous) is list:
                    previous.append(value)
                else:
                    parent[name] = [previous, value]
            else:
                parent[name] = value
        elif depth == self.item_depth:  # an item: hand it over (its text unstripped, as xmltodict does)
            value = self.item
            if value is None:
                value = "".join(self.data) if self.data else None
            self.stack.pop()
            self.item, self.data = None, []  # text between items is never used: not kept either
            if not self.on_item(self.ancestors, name, value):
                raise _Stop
        else:
            self.ancestors.pop()
            self.item, self.data = None, []

    def characters(self, text: str) -> None:
        if self.skipping or self.depth < self.item_depth:
            return
        chars = self.chars = self.chars + len(text)
        if chars > MAX_ITEM_TEXT_CHARS:
            self._too_large(TOO_MUCH_TEXT)
        else:
            self.data.append(text)

    def _too_large(self, reason: str) -> None:
        """The element at item depth passed a bound: keep only its top level built so far, skip the rest of it."""
        stack = self.stack
        # stack[0] is what was current before the element at item depth opened; stack[1] holds that
        # element's own value once a child of it is open, else it is ``self.item``.
        partial = stack[1][0] if len(stack) > 1 else self.item if stack else None
        self.oversized = _Oversized(reason, partial)
        stack.clear()
        self.item, self.data = None, []
        self.skipping = True


def stream_feed(
    payload: bytes,
    source_url: str,
    source_name: str,
    on_item: Callable[[JobPosting | ItemFailure | None], bool],
    wanted: Callable[[int], bool] | None = None,
) -> tuple[str, str]:
    """Parse RSS 2.0, Atom 1.0 or RSS 1.0/RDF bytes, handing each item to ``on_item`` as it closes.

    Returns ``(kind, title)``. ``on_item`` returns False to stop reading (a cap on items).
    ``wanted(index)`` False: the item is counted but not normalised, and ``on_item`` gets None for it.
    Raises FeedError before the first item when the document as a whole is unusable (hostile,
    broken, not a feed); after items were handed out only when nesting passes ``MAX_DEPTH``.
    A bad item only becomes an ItemFailure and never stops the others.
    """
    if is_blank(payload):
        raise FeedError("empty body")
    root_name, _attrs = _read_prolog(payload)
    local = root_name.rpartition(":")[2]
    kind = _KINDS.get(local)
    if kind is None:
        hint = " (an HTML page, not a feed)" if local.lower() == "html" else ""
        raise FeedError(f"not a feed: root element <{clip(root_name, 100)}>{hint}")
    _check_well_formed(payload)
    collector = _Collector(kind, root_name, source_url, source_name, on_item, wanted)
    try:
        skipping = (collector.skips, collector.skipped) if wanted is not None else (None, None)
        _parse_guarded(payload, _ItemReader(3 if kind == "rss" else 2, collector, *skipping))
    except _Stop:
        pass  # on_item asked to stop
    except _TooDeep:
        raise FeedError(REFUSED_DEPTH.format(max_depth=MAX_DEPTH)) from None
    return kind, collector.title


def parse_feed(payload: bytes, source_url: str, source_name: str = "") -> ParsedFeed:
    """Parse RSS 2.0, Atom 1.0 or RSS 1.0/RDF bytes into normalised postings (all in memory).

    Bytes (not str) so the encoding declared in the XML prolog (or a BOM) is honoured.
    Raises FeedError when the document as a whole is unusable; a bad item only becomes an
    ItemFailure in ``items`` and never stops the others. The worker streams instead
    (:func:`stream_feed` in a parse process, ``agents/parsing.py``).
    """
    items: list[JobPosting | ItemFailure] = []

    def keep(item: JobPosting | ItemFailure | None) -> bool:
        if item is not None:
            items.append(item)
        return True

    kind, title = stream_feed(payload, source_url, source_name, keep)
    return ParsedFeed(kind=kind, title=title, items=items)
