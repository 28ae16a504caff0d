"""The records a parse hands out: JobPosting, ItemFailure, ParsedFeed, and the feed-level FeedError."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.feed.dates import _to_utc, parse_date
from models.feed.hashing import _fingerprint, dedupe_key

MAX_KEY_CHARS = 500
MAX_REASON_CHARS = 1_000

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
