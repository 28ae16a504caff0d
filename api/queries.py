"""Pure request parsing: query strings and JSON bodies → validated values and MongoDB filters.

Nothing here does I/O, so every rule of the HTTP API's input handling is testable without a server.
Every problem raises ``ApiError`` with the status and a message a client can act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from models.registry import FeedEntry, RegistryError, entry_from, validate_url
from models.runs import STATUSES, iso

Document = dict[str, Any]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class ApiError(Exception):
    """A request the API refuses: rendered by the error middleware as ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass(frozen=True, slots=True)
class Page:
    """A 1-based page of ``limit`` items."""

    page: int = 1
    limit: int = DEFAULT_LIMIT

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.limit


def parse_int(query: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise bad_request(f"{name} must be {bounds}, got {value}")
    return value


def parse_page(query: Mapping[str, str]) -> Page:
    return Page(parse_int(query, "page", 1, 1), parse_int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT))


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


def text_param(query: Mapping[str, str], name: str, max_length: int = 500) -> str | None:
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise bad_request(f"{name} is longer than {max_length} characters")
    return raw.strip()


@dataclass(frozen=True, slots=True)
class LogQuery:
    """The filters of ``GET /api/import-logs`` as two MongoDB filters.

    Runs not started yet (pending, ``startedAt`` null) are the newest of all, but MongoDB sorts
    nulls last in a descending sort; so they are queried apart, by ``requestedAt``, and listed first.
    """

    unstarted: Document
    started: Document


def import_logs_query(query: Mapping[str, str]) -> LogQuery:
    common: Document = {}
    status = text_param(query, "status")
    if status is not None:
        statuses = parse_statuses(status)
        common["status"] = statuses[0] if len(statuses) == 1 else {"$in": statuses}
    source = text_param(query, "source", 2000)
    if source is not None:
        common["sourceUrl"] = source
    unstarted: Document = {**common, "startedAt": None}
    started: Document = {**common, "startedAt": {"$ne": None}}
    since_raw = text_param(query, "since")
    if since_raw is not None:
        since = parse_since(since_raw)
        unstarted["requestedAt"] = {"$gte": since}
        started["startedAt"] = {"$gte": since}
    return LogQuery(unstarted, started)


@dataclass(frozen=True, slots=True)
class Slices:
    """Where one page of ``unstarted + started`` falls in each of the two result sets."""

    unstarted_skip: int
    unstarted_limit: int
    started_skip: int
    started_limit: int


def split_page(page: Page, unstarted_total: int) -> Slices:
    """Cut the page out of the concatenation of two sorted lists, the first ``unstarted_total`` long."""
    unstarted_skip = min(page.skip, unstarted_total)
    unstarted_limit = max(0, min(page.limit, unstarted_total - page.skip))
    return Slices(unstarted_skip, unstarted_limit, max(0, page.skip - unstarted_total), page.limit - unstarted_limit)


def jobs_filter(query: Mapping[str, str]) -> Document:
    """``q`` matches title or company, ``company`` a whole company name; both case-insensitively."""
    conditions: Document = {}
    q = text_param(query, "q")
    if q is not None:
        pattern = {"$regex": re.escape(q), "$options": "i"}
        conditions["$or"] = [{"title": pattern}, {"company": dict(pattern)}]
    source = text_param(query, "source", 2000)
    if source is not None:
        conditions["sourceUrl"] = source
    company = text_param(query, "company")
    if company is not None:
        conditions["company"] = {"$regex": f"^{re.escape(company)}$", "$options": "i"}
    return conditions


def parse_object_id(raw: str) -> ObjectId:
    if not ObjectId.is_valid(raw):
        raise bad_request(f"feed id must be a 24-character hex ObjectId, got {raw!r}")
    return ObjectId(raw)


def require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"{what} must be a JSON object")
    return body


def new_feed(body: Any) -> FeedEntry:
    """``POST /api/feeds``: ``{url, name?, enabled?}`` and nothing else."""
    fields = require_object(body, "request body")
    unknown = sorted(set(fields) - {"url", "name", "enabled"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")
    try:
        return entry_from(fields, "feed")
    except RegistryError as exc:
        raise bad_request(str(exc)) from None


def feed_changes(body: Any) -> Document:
    """``PATCH /api/feeds/{id}``: ``{enabled?: bool, name?: str}``, at least one of them."""
    fields = require_object(body, "request body")
    unknown = sorted(set(fields) - {"enabled", "name"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}; only 'enabled' and 'name' can change")
    changes: Document = {}
    if "enabled" in fields:
        if not isinstance(fields["enabled"], bool):
            raise bad_request("'enabled' must be a boolean")
        changes["enabled"] = fields["enabled"]
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str) or not name.strip():
            raise bad_request("'name' must be a non-empty string")
        changes["name"] = name.strip()
    if not changes:
        raise bad_request("nothing to change: give 'enabled' and/or 'name'")
    return changes


def requested_urls(body: Any) -> list[str] | None:
    """``POST /api/import/run``: None means every enabled feed; else the distinct, valid URLs given."""
    if body is None:
        return None
    fields = require_object(body, "request body")
    unknown = sorted(set(fields) - {"feeds"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")
    if "feeds" not in fields or fields["feeds"] is None:
        return None
    feeds = fields["feeds"]
    if not isinstance(feeds, list) or not feeds:
        raise bad_request("'feeds' must be a non-empty list of feed URLs")
    urls: list[str] = []
    for index, raw in enumerate(feeds):
        try:
            url = validate_url(raw)
        except RegistryError as exc:
            raise bad_request(f"feeds[{index}]: {exc}") from None
        if url not in urls:
            urls.append(url)
    return urls


def run_entries(urls: list[str], registry: Mapping[str, Document]) -> list[FeedEntry]:
    """Known URLs keep their registry name; unknown ones are named after their host."""
    entries = []
    for url in urls:
        known = registry.get(url)
        entries.append(FeedEntry(url, str(known["name"])) if known and known.get("name") else entry_from(url))
    return entries


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
    return {"id": str(doc["_id"]), **to_json(doc)}
