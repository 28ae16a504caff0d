"""RSS 2.0, Atom 1.0 and RSS 1.0/RDF items normalised into JobPostings.

Namespaces are matched by the prefixes the feed declares, not by expat's namespace processing: WP
Job Manager binds ``job_listing:`` to the *site's own URL*, so that prefix is only recognisable by
name; for well-known URIs (Dublin Core, content, RDF, Atom) the prefix the feed actually declared for
the URI is used, so ``<d:creator>`` with ``xmlns:d="http://purl.org/dc/elements/1.1/"`` works.
Undeclared prefixes do not make the whole feed unusable either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.feed.dates import parse_date
from models.feed.fields import MAX_LINE_CHARS, _bounded, _categories, _first, _line, _markup, _text, _TooLarge
from models.feed.reader import _Oversized
from models.feed.records import ItemFailure, JobPosting, clip

_NS_DC = ("http://purl.org/dc/elements/1.1/",)
_NS_CONTENT = ("http://purl.org/rss/1.0/modules/content/",)
_NS_RDF = ("http://www.w3.org/1999/02/22-rdf-syntax-ns#",)
_NS_RSS1 = ("http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/")

# Root element local name -> feed kind.
_KINDS = {"rss": "rss", "RDF": "rdf", "feed": "atom"}


def _rss_link(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        raw = value.get("#text") or value.get("@href")
        return raw.strip() if isinstance(raw, str) else ""
    if isinstance(value, list):
        return _first(value, _rss_link)
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
