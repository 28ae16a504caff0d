"""Job XML feeds (SPEC §3a): a feed's format and mapping, validated, and its mapped items normalised.

A mapping is data, never code: an item path and, per posting field, one or more plain paths (child
names separated by ``/``, an ``@attribute`` last). No expression, function, wildcard or axis is
accepted, and the size is bounded (``MAX_MAPPING_PATHS`` paths of ``MAX_PATH_STEPS`` steps), so a
mapping costs a bounded number of dict lookups per item whatever the feed or the admin writes.
Mapped items go through the same field bounds and normalisation as RSS items, and so through the
same :meth:`JobPosting.build` and fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models.feed.dates import parse_date
from models.feed.fields import MAX_LINE_CHARS, _bounded, _categories, _line, _markup, _text, _TooLarge
from models.feed.reader import _Oversized
from models.feed.records import ItemFailure, JobPosting, clip

FORMATS = ("auto", "rss", "atom", "rdf", "indeed", "xml")
"""``auto`` tells the format from the root element; ``indeed`` and ``xml`` are read through a mapping."""
SYNDICATION_FORMATS = ("rss", "atom", "rdf")
MAPPED_FORMATS = ("indeed", "xml")
FIELDS = ("externalId", "title", "company", "location", "jobType", "categories", "region", "url", "description",
          "publishedAt")
MAX_MAPPING_PATHS = 32
MAX_PATH_STEPS = 8
MAX_PATH_CHARS = 200
_NAME_PUNCTUATION = frozenset("-._")

INDEED_MAPPING: dict[str, Any] = {
    "item": "job",
    "fields": {
        "externalId": "referencenumber",
        "title": "title",
        "company": "company",
        "location": ["city", "state", "country"],
        "url": "url",
        "description": "description",
        "publishedAt": "date",
        "jobType": "jobtype",
        "categories": "category",
        "region": "country",
    },
}
"""The ``indeed`` preset: ``<source><job><title/><referencenumber/>...</job></source>``."""


class MappingError(ValueError):
    """A format or mapping that cannot be saved; ``str()`` names the field and says why (the API's 400)."""


@dataclass(frozen=True, slots=True)
class Path:
    """A plain path below an item: child names, then optionally an attribute of the last one (or of the item)."""

    steps: tuple[str, ...]
    attribute: str | None = None


@dataclass(frozen=True, slots=True)
class JobMapping:
    """A validated mapping: the item's path below the root element and each field's paths."""

    item: tuple[str, ...]
    fields: tuple[tuple[str, tuple[Path, ...]], ...]

    @property
    def item_depth(self) -> int:
        """The item elements' depth counted from the root element (1)."""
        return len(self.item) + 1


def _is_name(step: str) -> bool:
    """An XML name as a feed writes it, with at most one namespace prefix: no wildcard, axis or function."""
    prefix, colon, local = step.partition(":")
    parts = (prefix, local) if colon else (step,)
    for part in parts:
        if not part or not (part[0].isalpha() or part[0] == "_"):
            return False
        if any(not (char.isalnum() or char in _NAME_PUNCTUATION) for char in part):
            return False
    return True


def parse_path(raw: Any, where: str, *, item: bool = False) -> Path:
    """One path of a mapping; MappingError naming ``where`` when it is not a plain, bounded path."""
    if not isinstance(raw, str) or not raw.strip():
        raise MappingError(f"{where}: must be a non-empty path string")
    text = raw.strip()
    if len(text) > MAX_PATH_CHARS:
        raise MappingError(f"{where}: path longer than {MAX_PATH_CHARS} characters")
    steps = text.split("/")
    if len(steps) > MAX_PATH_STEPS:
        raise MappingError(f"{where}: path {clip(text, 80)!r} is too deep: {len(steps)} steps (at most {MAX_PATH_STEPS})")
    attribute = None
    if steps[-1].startswith("@"):
        if item:
            raise MappingError(f"{where}: the item path names elements only, not an attribute")
        attribute = steps.pop()[1:]
        if not _is_name(attribute):
            raise MappingError(f"{where}: {raw!r} is not a plain path: '@' must be followed by an attribute name")
    for step in steps:
        if not _is_name(step):
            raise MappingError(f"{where}: {clip(text, 80)!r} is not a plain path: each step must be an element name "
                               "(child names separated by '/', an '@attribute' last; no expressions or functions)")
    return Path(tuple(steps), attribute)


def parse_mapping(raw: Any, where: str = "mapping", base: Mapping[str, Any] | None = None) -> JobMapping:
    """A mapping from its JSON form ``{"item": PATH, "fields": {FIELD: PATH | [PATH, ...]}}``; MappingError if invalid.

    ``base`` (the ``indeed`` preset) is overridden field by field: then ``item`` and any field may be left out.
    """
    if not isinstance(raw, Mapping):
        raise MappingError(f"{where}: must be an object with 'item' and 'fields'")
    unknown = sorted(set(raw) - {"item", "fields"})
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}: a mapping has 'item' and 'fields'")
    item_raw = raw.get("item", base.get("item") if base is not None else None)
    if item_raw is None:
        raise MappingError(f"{where}.item: missing: the path from the root element to the repeating item element")
    item = parse_path(item_raw, f"{where}.item", item=True)
    fields_raw = raw.get("fields", {} if base is not None else None)
    if not isinstance(fields_raw, Mapping):
        raise MappingError(f"{where}.fields: must be an object of FIELD: PATH or [PATH, ...]")
    unknown = sorted(str(name) for name in fields_raw if name not in FIELDS)
    if unknown:
        raise MappingError(f"{where}.fields: unknown field(s) {', '.join(map(repr, unknown))}; "
                           f"fields are {', '.join(FIELDS)}")
    merged = {**(base.get("fields", {}) if base is not None else {}), **fields_raw}
    fields: list[tuple[str, tuple[Path, ...]]] = []
    total = 0
    for name in FIELDS:
        if name not in merged or merged[name] is None:
            continue
        value = merged[name]
        raws = value if isinstance(value, list) else [value]
        if not raws:
            raise MappingError(f"{where}.fields.{name}: an empty list of paths")
        total += len(raws)
        if total > MAX_MAPPING_PATHS:
            raise MappingError(f"{where}.fields: too many paths (at most {MAX_MAPPING_PATHS})")
        paths = tuple(parse_path(path, f"{where}.fields.{name}" + (f"[{index}]" if isinstance(value, list) else ""))
                      for index, path in enumerate(raws))
        fields.append((name, paths))
    named = {name for name, _ in fields}
    if "title" not in named:
        raise MappingError(f"{where}.fields.title: missing: every posting needs a title")
    if not named & {"externalId", "url"}:
        raise MappingError(f"{where}.fields: missing an identity: map 'externalId' or 'url' (or both)")
    return JobMapping(item.steps, tuple(fields))


def validate_feed_format(raw_format: Any, raw_mapping: Any) -> tuple[str, dict[str, Any] | None]:
    """A feed's ``format`` and ``mapping`` as stored (defaults filled in); MappingError naming the field otherwise.

    The registry (FEEDS_FILE, ``POST``/``PATCH /api/feeds``) saves only what passes here.
    """
    feed_format = "auto" if raw_format is None else raw_format
    if not isinstance(feed_format, str) or feed_format not in FORMATS:
        raise MappingError(f"format: must be one of {', '.join(FORMATS)}, got {clip(repr(raw_format), 80)}")
    if raw_mapping is None:
        if feed_format == "xml":
            raise MappingError("mapping: required for format 'xml' (which element is an item, and where each field is)")
        return feed_format, None
    if feed_format in SYNDICATION_FORMATS:
        raise MappingError(f"mapping: not used with format {feed_format!r}: a mapping is for 'indeed', 'xml' or 'auto'")
    parse_mapping(raw_mapping, "mapping", INDEED_MAPPING if feed_format == "indeed" else None)
    return feed_format, mapping_json(raw_mapping)


def mapping_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A validated mapping's JSON as stored: paths stripped, nothing else changed."""
    out: dict[str, Any] = {}
    if "item" in raw:
        out["item"] = str(raw["item"]).strip()
    if "fields" in raw:
        out["fields"] = {name: [str(p).strip() for p in value] if isinstance(value, list) else str(value).strip()
                         for name, value in raw["fields"].items() if value is not None}
    return out


def mapping_for(feed_format: str, raw_mapping: Mapping[str, Any] | None) -> JobMapping:
    """The mapping a job XML feed is read with: the feed's own, or the ``indeed`` preset (with its overrides)."""
    if feed_format == "indeed":
        return parse_mapping(raw_mapping or {}, "mapping", INDEED_MAPPING)
    if raw_mapping is None:
        raise MappingError("mapping: required for format 'xml'")
    return parse_mapping(raw_mapping)


# --------------------------------------------------------------------------- reading mapped items


def _select(node: Any, steps: tuple[str, ...], attribute: str | None, out: list[Any]) -> None:
    """Every value at ``steps`` (then ``@attribute``) below ``node``; repeated elements each count."""
    for value in node if type(node) is list else (node,):
        if not steps:
            if attribute is None:
                out.append(value)
            elif type(value) is dict:
                found = value.get("@" + attribute)
                if found is not None:
                    out.append(found)
        elif type(value) is dict:
            child = value.get(steps[0])
            if child is not None:
                _select(child, steps[1:], attribute, out)


def _values(item: Any, paths: tuple[Path, ...]) -> list[list[Any]]:
    """The values of each path, in the mapping's order."""
    found: list[list[Any]] = []
    for path in paths:
        values: list[Any] = []
        _select(item, path.steps, path.attribute, values)
        found.append(values)
    return found


def _joined(per_path: list[list[Any]], field: str, read: Callable[[Any, str], str]) -> str:
    """Each path's first non-empty value, the non-empty ones joined with ", " (a single path: its value)."""
    parts: list[str] = []
    for values in per_path:
        for value in values:
            text = read(value, field)
            if text:
                parts.append(text)
                break
    return ", ".join(parts)


def _line_value(value: Any, field: str) -> str:
    return _line(_text(value), field)


def _id_value(value: Any, field: str) -> str:
    return _bounded(field, _text(value)).strip()


def _markup_value(value: Any, field: str) -> str:
    return _markup(value)


class MappedCollector:
    """The item reader's callback for a job XML feed: each item at the mapping's path normalised as it closes."""

    __slots__ = ("mapping", "paths", "source_url", "source_name", "title", "count", "on_item", "wanted", "title_path")

    def __init__(self, mapping: JobMapping, source_url: str, source_name: str,
                 on_item: Callable[[JobPosting | ItemFailure | None], bool], wanted: Callable[[int], bool] | None,
                 title_path: tuple[str, ...] = ()) -> None:
        self.mapping = mapping
        self.paths = dict(mapping.fields)
        self.source_url = source_url
        self.source_name = source_name
        self.title = ""
        self.count = 0
        self.on_item = on_item
        self.wanted = wanted
        self.title_path = title_path  # the element (below the root) that names the feed, e.g. Indeed's <publisher>

    def _is_item(self, ancestors: list[tuple[str, dict[str, str] | None]], name: str) -> bool:
        item = self.mapping.item
        if name != item[-1]:
            return False
        for index, step in enumerate(item[:-1], 1):  # ancestors[0] is the root element
            if ancestors[index][0] != step:
                return False
        return True

    def __call__(self, ancestors: list[tuple[str, dict[str, str] | None]], name: str, value: Any) -> bool:
        if self._is_item(ancestors, name):
            item = self.normalise(value, self.count)
            self.count += 1
            return self.on_item(item)
        if not self.title and self.title_path and (*(a for a, _ in ancestors[1:]), name) == self.title_path:
            self.title = _line(clip(_text(value), MAX_LINE_CHARS))
        return True

    def skips(self, ancestors: list[tuple[str, dict[str, str] | None]], name: str) -> bool:
        """An item ``wanted`` leaves out is never built (a parse lane walking past another lane's items)."""
        return self.wanted is not None and self._is_item(ancestors, name) and not self.wanted(self.count)

    def skipped(self) -> bool:
        self.count += 1
        return self.on_item(None)

    def normalise(self, item: Any, index: int) -> JobPosting | ItemFailure:
        """One mapped item → a JobPosting, or an ItemFailure with its reason; never raises."""
        if type(item) is _Oversized:
            partial = item.partial
            return ItemFailure(key=self._best_key(partial, index), reason=item.reason, stage="parse")
        try:
            return self._posting(item, index)
        except _TooLarge as exc:
            return ItemFailure(key=self._best_key(item, index), reason=str(exc))
        except Exception as exc:  # one bad item must never stop the rest
            return ItemFailure(key=self._best_key(item, index),
                               reason=f"could not normalise item: {type(exc).__name__}: {exc}")

    def _posting(self, item: Any, index: int) -> JobPosting | ItemFailure:
        paths = self.paths

        def values(field: str) -> list[list[Any]]:
            return _values(item, paths[field]) if field in paths else []

        def line(field: str) -> str:
            return _joined(values(field), field, _line_value)

        external_id = _joined(values("externalId"), "externalId", _id_value)
        url = _joined(values("url"), "url", _id_value)
        title = line("title")
        if not title:
            return ItemFailure(key=external_id or url or f"item[{index}]", reason="missing title")
        if not external_id:
            external_id = url
            if not external_id:
                return ItemFailure(key=title, reason="missing guid and link")
        published = None
        for per_path in values("publishedAt"):  # the first path that holds a date
            for value in per_path:
                text = _bounded("date", _text(value))
                if text:
                    published = parse_date(text)
                    break
            if published is not None:
                break
        return JobPosting.build(
            source_url=self.source_url,
            source_name=self.source_name,
            external_id=external_id,
            title=title,
            company=line("company"),
            location=line("location"),
            job_type=line("jobType"),
            categories=_categories(*(value for per_path in values("categories") for value in per_path)),
            region=line("region"),
            url=url,
            description=_joined(values("description"), "description", _markup_value),
            published_at=published,
        )

    def _best_key(self, item: Any, index: int) -> str:
        """Best identifier for a failure report: externalId, url, title, else the position."""
        for field in ("externalId", "url", "title"):
            if field not in self.paths or not isinstance(item, dict):
                continue
            try:
                for per_path in _values(item, self.paths[field]):
                    for value in per_path:
                        text = clip(_text(value), MAX_LINE_CHARS).strip()
                        if text:
                            return text
            except Exception:  # noqa: S112 - reporting must not fail on a hostile item
                continue
        return f"item[{index}]"
