"""Pure rules of the HTTP API: errors, keyset order and cursors, run planning, MongoDB values as JSON.

The request bodies and list queries are validated by the models of ``api.models``, which use these rules.
Nothing here does I/O, so every rule of the HTTP API's input handling is testable without a server.
Every problem raises ``ApiError`` with the status and a message a client can act on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from models.registry import FeedEntry, entry_from, entry_of
from models.runs import STATUSES, iso, parse_iso

Document = dict[str, Any]

MAX_RUN_FEEDS = 100  # URLs one POST /api/import/run may name
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_PAGE = 1000
# ``skip`` costs the store time in proportion to the rows it skips (~0.06 ms a row on FerretDB/SQLite,
# measured): 2,000 keeps a numbered page near 120 ms; deeper pages go by cursor, which costs the same at any depth.
MAX_SKIP = 2_000
MAX_CURSOR_LENGTH = 1000
INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


class ApiError(Exception):
    """A request the API refuses: rendered by the error middleware as ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# --- keyset order and cursors ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """A list's order: ``field`` descending (nulls last, as MongoDB sorts them), ties broken by the unique ``tie``.

    ``kind`` tags the cursors of this order, so a cursor of one list is refused by another.
    """

    kind: str
    field: str
    tie: str
    tie_direction: int

    @property
    def sort(self) -> list[tuple[str, int]]:
        return [(self.field, -1), (self.tie, self.tie_direction)]


# Jobs (and job_search, whose _id is the same dedupeKey): newest published first.
JOBS_ORDER = Order("jobs", "publishedAt", "_id", 1)
# Runs: newest requested first; every run has requestedAt from its first ("requested") event.
RUNS_ORDER = Order("runs", "requestedAt", "runId", -1)


@dataclass(frozen=True, slots=True)
class Position:
    """The sort values of the last row of the previous page: the next page starts right after it."""

    value: datetime | None
    tie: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``limit`` items: by number (``skip``, shallow pages) or after a cursor position (any depth).

    ``total`` asks for an exact count of the matching documents, which reads every one of them.
    """

    page: int = 1
    limit: int = DEFAULT_LIMIT
    after: Position | None = None
    total: bool = False

    @property
    def skip(self) -> int:
        return 0 if self.after is not None else (self.page - 1) * self.limit


def encode_cursor(order: Order, page: int, row: Mapping[str, Any]) -> str:
    """An opaque ``after`` value: the order's tag, the page it opens, and ``row``'s sort values (base64url JSON)."""
    value = row.get(order.field)
    raw = [order.kind, page, iso(value) if isinstance(value, datetime) else None, str(row[order.tie])]
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(order: Order, raw: str) -> tuple[int, Position]:
    """The page number and position of a cursor made by ``encode_cursor`` for ``order``; 400 otherwise."""
    invalid = bad_request("after is not a cursor of this list: use the `next` value of a previous page")
    if len(raw) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not (isinstance(decoded, list) and len(decoded) == 4 and decoded[0] == order.kind):
        raise invalid
    _, page, value, tie = decoded
    if type(page) is not int or not 2 <= page <= 10**9 or not isinstance(tie, str) or not tie:
        raise invalid
    if value is None:
        return page, Position(None, tie)
    try:
        moment = parse_iso(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise invalid
    return page, Position(moment, tie)


def keyset_filters(base: Document, order: Order, after: Position | None) -> list[Document]:
    """The filters to run one after the other (each sorted by ``order.sort``) until a page is full.

    Every condition stays top-level and index-friendly: a range on the sort field, with the tie-break
    as a residual ``$or`` over the few rows equal to the position's value. Nulls sort last and no range
    reaches them, so after a non-null position they are a second query (only when the first runs out).
    """
    if after is None:
        return [base]
    field, tie = order.field, order.tie
    beyond = "$gt" if order.tie_direction == 1 else "$lt"
    bounded = field in base  # e.g. since: a range on the sort field, which excludes nulls
    if after.value is None:
        return [] if bounded else [{**base, field: None, tie: {beyond: after.tie}}]
    below: Document = {**(base[field] if bounded else {}), "$lte": after.value}
    first = {**base, field: below, "$or": [{field: {"$lt": after.value}}, {tie: {beyond: after.tie}}]}
    return [first] if bounded else [first, {**base, field: None}]


def cut_page(order: Order, page: Page, rows: list[Document]) -> tuple[list[Document], str | None]:
    """The page's items and the cursor of the next page (None on the last one): ``rows`` holds up to limit + 1."""
    items = rows[: page.limit]
    more = len(rows) > page.limit and bool(items)
    return items, encode_cursor(order, page.page + 1, items[-1]) if more else None


def parse_since(raw: str) -> datetime:
    """ISO-8601 date or date-time; a time without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise bad_request(f"since must be an ISO-8601 date or date-time, got {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_statuses(raw: str) -> list[str]:
    """One status or a comma-separated list of them."""
    statuses = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [status for status in statuses if status not in STATUSES]
    if not statuses or unknown:
        raise bad_request(f"status must be one or more of {', '.join(STATUSES)}, got {raw!r}")
    return statuses


def literal_regex(text: str) -> str:
    """A regex matching ``text`` literally, with every ASCII character but letters, digits and ``_`` escaped.

    Like ``re.escape`` but escaping all ASCII punctuation (``re.escape`` leaves ``/ @ , : ' "`` and others
    bare), so the store can recognise the whole pattern as a plain substring and serve it from SQL. A
    backslash before ASCII punctuation is a literal in PCRE (MongoDB), Go (FerretDB) and Python alike;
    non-ASCII characters stay bare, as an escape before them is an error in Go.
    """
    return "".join("\\" + char if char.isascii() and not (char.isalnum() or char == "_") else char for char in text)


def parse_object_id(raw: str) -> ObjectId:
    if not ObjectId.is_valid(raw):
        raise bad_request(f"feed id must be a 24-character hex ObjectId, got {raw!r}")
    return ObjectId(raw)


def require_registered(urls: list[str], registry: Mapping[str, Document], allowed_unregistered: bool) -> None:
    """403 unless every URL is a registered feed, or the caller holds API_TOKEN.

    Without a token anyone on this machine (or a page they open) could make the worker fetch any
    address in one request; registering a feed first leaves it visible in the registry.
    """
    if allowed_unregistered:
        return
    unknown = [url for url in urls if url not in registry]
    if unknown:
        raise ApiError(403, f"{len(unknown)} of the feeds are not registered (first: {unknown[0]!r}): register them "
                            "with POST /api/feeds first; unregistered URLs are run only for callers with API_TOKEN")


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one run request starts, and what it leaves alone with the reason (``skipped``)."""

    entries: list[FeedEntry]
    skipped: list[Document]


ALREADY_RUNNING = "already running"  # import_logs has a pending or running run of the feed
ALREADY_REQUESTED = "already requested"  # this API requested one a moment ago that import_logs does not show yet


def plan_runs(urls: list[str], registry: Mapping[str, Document], running: set[str], requested: set[str]) -> RunPlan:
    """Every URL not busy gets a run; a busy one is skipped with its reason, so no feed runs twice at once."""
    entries: list[FeedEntry] = []
    skipped: list[Document] = []
    for url in urls:
        if url in running:
            skipped.append({"sourceUrl": url, "reason": ALREADY_RUNNING})
        elif url in requested:
            skipped.append({"sourceUrl": url, "reason": ALREADY_REQUESTED})
        else:
            entries.append(run_entry(url, registry.get(url)))
    return RunPlan(entries, skipped)


def run_entry(url: str, known: Document | None) -> FeedEntry:
    """A registered feed keeps its registry name; an unregistered one is named after its host."""
    if known is None:
        return entry_from(url)
    entry = entry_of(known)
    return entry if entry.name else replace(entry, name=entry_from(url).name)


def to_json(value: Any) -> Any:
    """MongoDB values → JSON values: datetimes as ISO-8601 with Z, ObjectIds as hex."""
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items() if key != "_id"}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value


def feed_json(doc: Document) -> Document:
    """A registry document as the API shows it: ``_id`` becomes ``id``."""
    return {"id": str(doc["_id"]), "format": "auto", "mapping": None, **to_json(doc)}
