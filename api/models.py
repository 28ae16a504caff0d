"""The HTTP API's typed requests and responses (pydantic v2): the one definition of its bodies, queries and answers.

Request bodies and list queries are pydantic models: ``validated`` turns a JSON value into one, or into a 400
``ApiError`` whose message names the field and why. Where a rule already exists it is the validator (URLs and
names: ``models.registry``; formats and mappings: ``models.feed.mapping.validate_feed_format``; cursors:
``api.queries``), so each rule still has one source. Responses are TypedDicts: they type the handlers' dicts at
no cost per row (the hot lists are not round-tripped through model objects) and describe the answers.
``components()`` generates the OpenAPI document's schemas (``api.openapi``) from all of them.

Nothing here does I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, NotRequired, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from api.queries import (
    DEFAULT_LIMIT,
    INTEGER,
    JOBS_ORDER,
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    MAX_PAGE,
    MAX_RUN_FEEDS,
    MAX_SKIP,
    RUNS_ORDER,
    ApiError,
    Document,
    Order,
    Page,
    decode_cursor,
    literal_regex,
    parse_since,
    parse_statuses,
)
from models.feed.mapping import FIELDS, MAX_MAPPING_PATHS, MAX_PATH_CHARS, MAX_PATH_STEPS, MappingError, validate_feed_format
from models.postings import search_key
from models.registry import MAX_NAME_LENGTH, MAX_URL_LENGTH, FeedEntry, RegistryError, validate_name, validate_url

TEXT = 500  # the longest free-text query value
MAX_RUN_ID_LENGTH = 256
MAX_TOKEN_LENGTH = 4096

# --- errors: a pydantic ValidationError as the API's 400 -------------------------------------------------------

LOCATED = "jobstream_located"  # the message names its field already (``mapping.fields.title: missing ...``)
INVALID = "jobstream_invalid"  # the message says why; the field's location is put before it
TYPE_WORDS = {"bool_type": "must be a boolean", "string_type": "must be a string", "list_type": "must be a list",
              "int_type": "must be an integer", "dict_type": "must be a JSON object", "model_type": "must be a JSON object",
              "model_attributes_type": "must be a JSON object"}


def located(message: str) -> PydanticCustomError:
    return PydanticCustomError(LOCATED, "{message}", {"message": message})


def invalid(why: str) -> PydanticCustomError:
    return PydanticCustomError(INVALID, "{why}", {"why": why})


def where(loc: tuple[int | str, ...]) -> str:
    """``("feeds", 0)`` → ``feeds[0]``, ``("mapping", "item")`` → ``mapping.item``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def problem(model: type[BaseModel], errors: list[ErrorDetails]) -> str:
    """The 400's message: every unknown field, else the first problem with its field and why."""
    unknown = sorted(where(error["loc"]) for error in errors if error["type"] == "extra_forbidden")
    if unknown:
        hint = getattr(model, "UNKNOWN_HINT", "")
        return f"unknown field(s): {', '.join(unknown)}{hint}"
    error = errors[0]
    if error["type"] == LOCATED:
        return error["msg"]
    place = where(error["loc"])
    if error["type"] == "missing" and len(error["loc"]) == 1:
        described = model.model_fields[str(error["loc"][0])].description
        return f"{place!r} is required" + (f": {described}" if described else "")
    why = error["msg"] if error["type"] == INVALID else TYPE_WORDS.get(error["type"], error["msg"])
    return f"{place}: {why}" if place else why


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, what: str = "request body") -> M:
    """``data`` (a parsed JSON body, a query's values) as ``model``; ApiError 400 naming the field and why otherwise."""
    if not isinstance(data, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, problem(model, exc.errors(include_url=False))) from None


# --- shared field types -----------------------------------------------------------------------------------------


def _url(value: Any) -> str:
    try:
        return validate_url(value)
    except RegistryError as exc:
        raise invalid(str(exc)) from None


def _run_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_RUN_ID_LENGTH or not value.isprintable():
        raise invalid(f"must be a run id (1 to {MAX_RUN_ID_LENGTH} printable characters)")
    return value.strip()


def _name(value: Any) -> str:
    try:
        return validate_name(value)
    except RegistryError as exc:
        raise invalid(str(exc)) from None


def _new_name(value: Any) -> str | None:
    """A new feed's name: left out or blank means the URL's host."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("must be a string")
    return _name(value) if value.strip() else None


def _format(value: Any) -> Any:
    """``null`` is no format (the default, or the stored one); anything else must be a format (``validate_feed_format``;
    what the format says of the mapping is the ``mapping`` field's check)."""
    if value is not None:
        try:
            validate_feed_format(value, None)
        except MappingError as exc:
            if str(exc).startswith("format:"):
                raise located(str(exc)) from None
    return value


def _flag_value(value: Any) -> Any:
    if not isinstance(value, bool):
        raise invalid("must be a boolean")
    return value


Url = Annotated[str, BeforeValidator(_url), Field(max_length=MAX_URL_LENGTH, json_schema_extra={"format": "uri"},
                                                  description="http(s) URL with a host, no control or invisible characters")]
FeedFormat = Literal["auto", "rss", "atom", "rdf", "indeed", "xml"]  # models.feed.mapping.FORMATS (a test pins it)
FORMAT_DESCRIPTION = (
    "how the feed is read (SPEC §3a): `auto` tells it from the root element (`rss`, `feed`, `RDF`: RSS/Atom/RDF; "
    "`source`: `indeed`); `indeed` is the Indeed-style `<source><job>` format (its preset mapping, which "
    "`mapping` overrides field by field); `xml` is any repeating item element, described by `mapping`")
RunStatus = Literal["pending", "running", "completed", "partial", "failed"]  # models.runs.STATUSES
RunTrigger = Literal["schedule", "manual", "cli", "replay"]  # models.runs.TRIGGERS
SkipReason = Literal["already running", "already requested"]  # api.queries.ALREADY_RUNNING, ALREADY_REQUESTED

# --- the feed mapping (SPEC §3a) ---------------------------------------------------------------------------------

MAPPING_RULES = (
    "`{\"item\": PATH, \"fields\": {FIELD: PATH | [PATH, ...]}}`: required for format `xml`, an override for `indeed`. "
    "`title` and one of `externalId`/`url` are required; a list of paths joins the non-empty values with \", \" "
    f"(`categories`: every value is one category); at most {MAX_MAPPING_PATHS} paths. A bad mapping is a 400 naming "
    "the field and why (`mapping.fields.title: missing ...`)")
PATH_RULES = (
    f"A path: child names separated by `/` (at most {MAX_PATH_STEPS} steps), namespace prefixes as the feed writes "
    "them (`job:location/city`), `@name` last for an attribute (`@id`, `apply/@href`). Data, never code: no "
    "wildcards, predicates, axes or functions")
MappingPath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]
MappingPaths = MappingPath | Annotated[list[MappingPath], Field(min_length=1, max_length=MAX_MAPPING_PATHS)]

MappingFields: type[BaseModel] = create_model(
    "MappingFields", __config__=ConfigDict(extra="forbid"),
    **{name: (MappingPaths | None, None) for name in FIELDS},  # type: ignore[call-overload]
)
MappingFields.__doc__ = f"Where each posting field is below an item: one path, or several joined. {PATH_RULES}"


class FeedMapping(BaseModel):
    """A job-XML feed's mapping. Its rules are ``models.feed.mapping``'s (``checked_mapping`` applies them first)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"description": MAPPING_RULES})

    item: Annotated[MappingPath | None, Field(description=(
        "path from the root element to the repeating item element (`job`, `jobs/position`); required unless the "
        "format is `indeed`"))] = None
    fields: MappingFields | None = None

    def stored(self) -> dict[str, Any]:
        """The JSON kept in the registry: what was given (paths stripped), nothing added."""
        return self.model_dump(exclude_unset=True)


def checked_mapping(value: Any, info: ValidationInfo) -> Any:
    """The ``mapping`` field's validator: ``validate_feed_format`` with the body's ``format`` (one source of the rules).

    Answers the mapping as stored (paths stripped), which the ``FeedMapping`` type then always accepts.
    """
    if "format" not in info.data:  # the format was refused: its error is the one to report
        return None
    try:
        _, mapping = validate_feed_format(info.data["format"], value)
    except MappingError as exc:
        raise located(str(exc)) from None
    return mapping


class Body(BaseModel):
    """A JSON request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", validate_default=False)
    UNKNOWN_HINT: ClassVar[str] = ""


# --- request bodies ----------------------------------------------------------------------------------------------


class NewFeed(Body):
    """``POST /api/feeds``: a feed to register."""

    url: Annotated[Url, Field(description="the feed's URL: http(s) with a host")]
    name: Annotated[str | None, BeforeValidator(_new_name), Field(description=(
        "default: the URL's host; one line (no control characters)"), json_schema_extra={"maxLength": MAX_NAME_LENGTH})] = None
    enabled: StrictBool = True
    format: Annotated[FeedFormat | None, BeforeValidator(_format), Field(description=FORMAT_DESCRIPTION)] = None
    mapping: Annotated[FeedMapping | None, Field(validate_default=True, description=MAPPING_RULES)] = None

    _mapping = field_validator("mapping", mode="before")(checked_mapping)

    def entry(self) -> FeedEntry:
        return FeedEntry(self.url, self.name or urlsplit(self.url).netloc, self.enabled, self.format or "auto",
                         self.mapping.stored() if self.mapping else None)


class FeedChange(Body):
    """``PATCH /api/feeds/{id}``: what changes, at least one field. ``format`` alone resets the mapping."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})
    UNKNOWN_HINT: ClassVar[str] = "; only 'enabled', 'name', 'format' and 'mapping' can change"

    enabled: Annotated[bool | None, BeforeValidator(_flag_value), WithJsonSchema({"type": "boolean"})] = None
    name: Annotated[str | None, BeforeValidator(_name), WithJsonSchema({"type": "string", "maxLength": MAX_NAME_LENGTH,
                                                                        "description": "one line (no control characters)"})] = None
    format: Annotated[FeedFormat | None, BeforeValidator(_format), Field(description=FORMAT_DESCRIPTION)] = None
    mapping: Annotated[FeedMapping | None, Field(validate_default=True, description=(
        "validated with `format` (give both; `format` alone resets it). " + MAPPING_RULES))] = None

    _mapping = field_validator("mapping", mode="before")(checked_mapping)

    @model_validator(mode="after")
    def _something(self) -> Self:
        given = self.model_fields_set
        if not given:
            raise located("nothing to change: give 'enabled', 'name', 'format' or 'mapping'")
        return self

    def changes(self) -> Document:
        """The registry's ``$set``: ``format`` and ``mapping`` together whenever either is given."""
        given = self.model_fields_set
        changes: Document = {field: getattr(self, field) for field in ("enabled", "name") if field in given}
        if given & {"format", "mapping"}:
            changes["format"] = self.format or "auto"
            changes["mapping"] = self.mapping.stored() if self.mapping else None
        return changes


def _feed_list(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise located("'feeds' must be a non-empty list of feed URLs")
    if len(value) > MAX_RUN_FEEDS:  # before deduplication: what the client sent
        raise located(f"'feeds' holds {len(value)} URLs: at most {MAX_RUN_FEEDS} per request")
    return value


class RunRequest(Body):
    """``POST /api/import/run``: the feeds to run now; none: every enabled feed of the registry."""

    feeds: Annotated[list[Url], BeforeValidator(_feed_list), Field(
        min_length=1, max_length=MAX_RUN_FEEDS, description="default (left out or null): every enabled feed of the registry")] = []

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        return {key: value for key, value in data.items() if key != "feeds" or value is not None}

    def urls(self) -> list[str] | None:
        """The distinct URLs in the order given (a dict keeps the first of each), or None: every enabled feed."""
        return list(dict.fromkeys(self.feeds)) if "feeds" in self.model_fields_set else None


class ReplayRequest(Body):
    """``POST /api/import/replay``: a run (``runId``: its payload) or a feed (``feed``: its latest stored payload)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["runId"]}, {"required": ["feed"]}]})

    runId: Annotated[str | None, BeforeValidator(_run_id), Field(description="a run whose payload to replay"),
                     WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_RUN_ID_LENGTH})] = None
    feed: Annotated[str | None, BeforeValidator(_url), Field(description="a feed URL: its latest stored payload"),
                    WithJsonSchema({"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH})] = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) <= set(cls.model_fields) and len(data) != 1:
            raise located('give exactly one of "runId" (a run whose payload to replay) or "feed" (a feed URL: its '
                          "latest stored payload)")
        return data


class PreviewRequest(Body):
    """``POST /api/feeds/preview``: a URL, and the format and mapping to read it with (none: the registered feed's)."""

    url: Annotated[Url, Field(description="the feed to preview")]
    format: Annotated[FeedFormat | None, BeforeValidator(_format), Field(description=FORMAT_DESCRIPTION)] = None
    mapping: Annotated[FeedMapping | None, Field(validate_default=True, description=(
        "the fields of a job-XML format (SPEC §3a). " + MAPPING_RULES))] = None

    _mapping = field_validator("mapping", mode="before")(checked_mapping)

    @property
    def given(self) -> bool:
        """A format or mapping was given: they replace the registered feed's."""
        return self.format is not None or self.mapping is not None

    def stored_mapping(self) -> dict[str, Any] | None:
        return self.mapping.stored() if self.mapping else None


def _token(value: Any) -> str:
    """Any string of the right length, as it came (compared in constant time; a lone surrogate is a wrong token, not a 400)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TOKEN_LENGTH:
        raise invalid(f"must be a string of 1 to {MAX_TOKEN_LENGTH} characters")
    return value


class SessionRequest(Body):
    """``POST /api/session``: the API token, once."""

    token: Annotated[str, PlainValidator(_token), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_LENGTH})]


# --- list queries ------------------------------------------------------------------------------------------------


def _integer(name: str, minimum: int, maximum: int) -> BeforeValidator:
    def parse(raw: Any) -> int:
        text = str(raw).strip()
        if not INTEGER.fullmatch(text):
            raise located(f"{name} must be an integer, got {str(raw)[:40]!r}")
        value = int(text)
        if not minimum <= value <= maximum:
            raise located(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value
    return BeforeValidator(parse)


def _flag(raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise located(f"total must be 1/true or 0/false, got {text[:40]!r}")


def _text(name: str, max_length: int) -> BeforeValidator:
    def check(raw: Any) -> str:
        if len(raw) > max_length:
            raise located(f"{name} is longer than {max_length} characters")
        return str(raw).strip()
    return BeforeValidator(check)


def _since(raw: Any) -> datetime:
    if len(raw) > TEXT:
        raise located(f"since is longer than {TEXT} characters")
    try:
        return parse_since(raw)
    except ApiError as exc:
        raise located(exc.message) from None


def _statuses(raw: Any) -> str:
    if len(raw) > TEXT:
        raise located(f"status is longer than {TEXT} characters")
    try:
        parse_statuses(raw)
    except ApiError as exc:
        raise located(exc.message) from None
    return str(raw).strip()


class ListQuery(BaseModel):
    """A page of a list: ``page`` (shallow) or ``after`` (a cursor, any depth), ``limit``, ``total``.

    Blank values count as left out (``of``); unknown parameters are ignored.
    """

    model_config = ConfigDict(extra="ignore")
    ORDER: ClassVar[Order]

    page: Annotated[int, Field(ge=1, le=MAX_PAGE, description=(
        f"1-based page number, for shallow pages: (page-1)*limit must be <= {MAX_SKIP} (400 beyond); "
        "deeper pages go by `after`")), _integer("page", 1, MAX_PAGE)] = 1
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="items per page"), _integer("limit", 1, MAX_LIMIT)] = DEFAULT_LIMIT
    after: Annotated[str | None, _text("after", MAX_CURSOR_LENGTH), Field(description=(
        "opaque cursor: the `next` of the previous page. Opens the page after it, at any depth, without "
        "gaps or repeats when items are added meanwhile. Not together with `page`"),
        json_schema_extra={"maxLength": MAX_CURSOR_LENGTH, "pattern": "^[A-Za-z0-9_-]*$"})] = None
    total: Annotated[bool, BeforeValidator(_flag), Field(description=(
        "1/true: count every matching item (reads them all: slow on big filtered sets)"))] = False

    _paging: Page = PrivateAttr(default_factory=Page)

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Self:
        """The query's parameters of this list (the first of repeated ones; blank ones left out), validated."""
        given = {name: value for name in cls.model_fields if (value := query.get(name)) is not None and value.strip()}
        return validated(cls, given, "query")

    @model_validator(mode="after")
    def _position(self) -> Self:
        if self.after is not None:
            if "page" in self.model_fields_set:
                raise located("give page or after, not both: after (a cursor) already says which page it opens")
            try:
                page, position = decode_cursor(self.ORDER, self.after)
            except ApiError as exc:
                raise located(exc.message) from None
            self._paging = Page(page, self.limit, position, self.total)
            return self
        if (self.page - 1) * self.limit > MAX_SKIP:
            raise located(f"page {self.page} is too deep for limit {self.limit}: (page-1)*limit must be <= {MAX_SKIP}; "
                          "go deeper with after=<the `next` cursor of the previous page>")
        self._paging = Page(self.page, self.limit, None, self.total)
        return self

    @property
    def paging(self) -> Page:
        return self._paging


class ImportLogsQuery(ListQuery):
    """``GET /api/import-logs``: newest requested first, filtered by ``status``, ``source`` and ``since``."""

    ORDER: ClassVar[Order] = RUNS_ORDER

    status: Annotated[str | None, BeforeValidator(_statuses), Field(
        description="one status or a comma-separated list", examples=["running,pending"],
        json_schema_extra={"maxLength": TEXT})] = None
    source: Annotated[str | None, _text("source", MAX_URL_LENGTH), Field(
        description="exact feed URL", json_schema_extra={"maxLength": MAX_URL_LENGTH})] = None
    since: Annotated[datetime | None, BeforeValidator(_since), Field(
        description="runs requested at or after this ISO-8601 time", json_schema_extra={"maxLength": TEXT})] = None

    def conditions(self) -> Document:
        """One top-level filter (``since`` is on requestedAt, the sort field)."""
        conditions: Document = {}
        if self.status is not None:
            statuses = parse_statuses(self.status)
            conditions["status"] = statuses[0] if len(statuses) == 1 else {"$in": statuses}
        if self.source is not None:
            conditions["sourceUrl"] = self.source
        if self.since is not None:
            conditions["requestedAt"] = {"$gte": self.since}
        return conditions


class JobsQuery(ListQuery):
    """``GET /api/jobs``: newest published first; ``q`` (a substring of title or company) and ``company`` (a whole
    company name) both case-insensitive, as ``job_search`` holds them casefolded (``models.postings.search_fields``)."""

    ORDER: ClassVar[Order] = JOBS_ORDER

    q: Annotated[str | None, _text("q", TEXT), Field(
        description="text in the title or company, case-insensitive", json_schema_extra={"maxLength": TEXT})] = None
    source: Annotated[str | None, _text("source", MAX_URL_LENGTH), Field(
        description="exact feed URL", json_schema_extra={"maxLength": MAX_URL_LENGTH})] = None
    company: Annotated[str | None, _text("company", TEXT), Field(
        description="company name, case-insensitive exact match", json_schema_extra={"maxLength": TEXT})] = None

    def conditions(self) -> Document:
        """The ``job_search`` filter."""
        conditions: Document = {}
        if self.source is not None:
            conditions["sourceUrl"] = self.source
        if self.company is not None:
            conditions["company"] = search_key(self.company)
        if self.q is not None:
            conditions["text"] = {"$regex": literal_regex(search_key(self.q))}
        return conditions


# --- responses (TypedDicts: the handlers' dicts, typed; described in the OpenAPI document) ------------------------

Timestamp = Annotated[datetime | None, Field(description="ISO-8601, UTC (`Z`)")]
Count = Annotated[int, Field(ge=0)]


class Error(TypedDict):
    """Every error answer: what went wrong, naming the field and why for a 400."""

    error: str


class Health(TypedDict):
    status: Literal["ok", "degraded", "error"]
    kafka: Annotated[str, Field(description=(
        "`ok`, `error: <why>`, or `degraded: N topic(s) under-replicated: <topic> (<what>), ...` (a pipeline "
        "topic with fewer replicas or a lower min.insync.replicas than KAFKA_REPLICATION_FACTOR / "
        "KAFKA_MIN_INSYNC_REPLICAS; status `degraded`, still 200)"))]
    mongo: Annotated[str, Field(description="`ok` or `error: <why>`")]
    workers: Annotated[str, Field(description=(
        "`ok` (the workers' consumer group has members), `idle: ...` (none, and no run request waits), "
        "`unknown: ...` (the group could not be asked), or `error: ...`: run requests wait on `commands` "
        "and no worker consumes them (then 503)"))]


class Failure(TypedDict, total=False):
    key: str
    reason: str
    stage: str


class ImportLog(TypedDict, total=False):
    """One import run (SPEC §3 `import_logs`). Lists omit `failures`; the detail has them."""

    runId: str
    sourceUrl: Annotated[str, Field(json_schema_extra={"format": "uri"})]
    fileName: str
    sourceName: str
    trigger: RunTrigger
    status: RunStatus
    requestedAt: Timestamp
    startedAt: Timestamp
    finishedAt: Timestamp
    durationMs: int | None
    totalFetched: Count
    newJobs: Count
    updatedJobs: Count
    unchangedJobs: Count
    failedJobs: Count
    totalImported: Count
    failures: list[Failure]
    failuresTruncated: bool
    error: str | None
    meta: Annotated[dict[str, Any], Field(description=(
        "httpStatus, bytes, notModified, batches, ...; a replay run's `replayOf` (the run whose payload it parsed) "
        "and `payloadFetchedAt`"))]


class Job(TypedDict, total=False):
    """One posting (SPEC §3 `jobs`). Lists omit `description`; the detail has it."""

    dedupeKey: str
    sourceUrl: str
    sourceName: str
    externalId: str
    title: str
    company: str | None
    location: str | None
    jobType: str | None
    categories: list[str]
    region: str | None
    url: str | None
    description: str | None
    publishedAt: Timestamp
    fingerprint: str
    version: int
    createdAt: Timestamp
    updatedAt: Timestamp
    lastRunId: str


class LastRun(TypedDict, total=False):
    """A feed's latest run, as the stats agent keeps it on the feed: runId, status and times (and counts)."""

    runId: str
    status: RunStatus
    requestedAt: Timestamp
    startedAt: Timestamp
    finishedAt: Timestamp


class Feed(TypedDict, total=False):
    id: Annotated[str, Field(description="MongoDB ObjectId, 24 hex characters")]
    url: Annotated[str, Field(json_schema_extra={"format": "uri"})]
    name: str
    enabled: bool
    format: Annotated[FeedFormat, Field(description=FORMAT_DESCRIPTION)]
    mapping: FeedMapping | None
    createdAt: Timestamp
    lastRun: LastRun | None


class FeedList(TypedDict):
    items: list[Feed]
    total: Count


class PageFields(TypedDict):
    page: Annotated[int, Field(ge=1, description="this page's number (also when reached by cursor)")]
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)]
    total: Annotated[int | None, Field(ge=0, description=(
        "with `total=1`: the exact number of matching items. Otherwise, without filters: the "
        "collection's estimated document count (from metadata, no scan); with filters: null (not counted)"))]
    totalExact: Annotated[bool, Field(description="true when `total` is an exact count (`total=1`)")]
    next: Annotated[str | None, Field(description="cursor of the next page (pass it as `after`); null on the last page")]


class JobPage(PageFields):
    items: list[Job]


class ImportLogPage(PageFields):
    items: list[ImportLog]


class RequestedRun(TypedDict):
    runId: str
    sourceUrl: str


class SkippedRun(TypedDict):
    sourceUrl: str
    reason: Annotated[SkipReason, Field(description=(
        "`already running`: import_logs has a pending or running run; "
        "`already requested`: this API requested one moments ago"))]


class RunsRequested(TypedDict):
    runs: list[RequestedRun]
    skipped: list[SkippedRun]


class ReplayRun(TypedDict):
    runId: str
    sourceUrl: str
    replayOf: str


class ReplayRequested(TypedDict):
    runs: Annotated[list[ReplayRun], Field(min_length=1, max_length=1)]


class PreviewFailure(TypedDict, total=False):
    seq: Count
    key: str
    reason: str
    stage: str


class Preview(TypedDict):
    format: Annotated[str, Field(description="the format the feed was read as (`rss`, `atom`, `rdf`, `indeed`, `xml`)")]
    title: NotRequired[str]
    totalFetched: Annotated[int, Field(ge=0, description="items found in the feed (one more, failed, when it was cut short)")]
    items: Annotated[list[Job], Field(max_length=20, description=(
        "the first 20 postings as a run would store them (without run fields)"))]
    failures: Annotated[list[PreviewFailure], Field(max_length=20)]
    failedCount: NotRequired[Count]
    failuresTruncated: NotRequired[bool]
    error: NotRequired[Annotated[str | None, Field(description="why the parse stopped early (deadline, item cap), if it did")]]


# --- the OpenAPI components ----------------------------------------------------------------------------------------

REF_TEMPLATE = "#/components/schemas/{model}"
COMPONENTS: tuple[Any, ...] = (Error, Health, Failure, ImportLog, Job, Feed, FeedList, JobPage, ImportLogPage, Preview,
                               RunsRequested, ReplayRequested, NewFeed, FeedChange, RunRequest, ReplayRequest, PreviewRequest,
                               SessionRequest, FeedMapping)
QUERIES: tuple[type[ListQuery], ...] = (ImportLogsQuery, JobsQuery)


def _untitled(schema: Any) -> Any:
    """A schema without pydantic's generated ``title`` keywords (a property named ``title`` stays)."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: _untitled(item) for name, item in value.items()}
        else:
            out[key] = _untitled(value)
    return out


@functools.cache
def components() -> dict[str, Any]:
    """Every model's JSON schema by name, references as ``#/components/schemas/NAME``."""
    holder = create_model("Components", **{type_.__name__: (type_, ...) for type_ in COMPONENTS})  # type: ignore[call-overload]
    schemas: dict[str, Any] = holder.model_json_schema(ref_template=REF_TEMPLATE)["$defs"]
    return {name: _untitled(schema) for name, schema in sorted(schemas.items())}


def query_parameters(model: type[ListQuery]) -> list[dict[str, Any]]:
    """A list query's OpenAPI parameters, from its model: each optional, its schema without ``null`` (absent is none)."""
    properties = _untitled(model.model_json_schema(ref_template=REF_TEMPLATE))["properties"]
    parameters = []
    for name, schema in properties.items():
        schema = dict(schema)
        description = schema.pop("description", "")
        if "anyOf" in schema:
            [kind] = [branch for branch in schema.pop("anyOf") if branch != {"type": "null"}]
            schema = {**kind, **{key: value for key, value in schema.items() if key != "default"}}
        parameters.append({"name": name, "in": "query", "required": False, "description": description, "schema": schema})
    return parameters
