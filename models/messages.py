"""The shape of every message jobstream's agents read, defined once per topic, and their decoding.

A message comes from the broker, and the broker takes any bytes from anyone who can produce to
it: an older or newer jobstream, a tool, a typo. Each agent decodes its messages here, and what
fails is a :class:`BadMessage`, which the agent sends to ``jobs.dlq`` and acknowledges
(``streams/inbox.py``). A value that passes is safe to use as it is: every field the agents read
has its type, every timestamp parses, and every sequence number is below ``MAX_ITEMS_PER_FEED``,
so no value can make an agent raise, or a run's bitmap allocate beyond what a run can hold.

The models are TypedDicts: the agents and the pure fold in ``models/runs.py`` keep working on
plain dicts, senders build them with mypy checking the fields, and msgspec validates while it
decodes (a 500-posting envelope: about half the time of ``orjson.loads`` alone). Unknown fields
are dropped, so a newer producer's additions cannot reach MongoDB unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, TypedDict, TypeVar

import msgspec
from msgspec import Meta

from models.feed.mapping import FORMATS, MAX_MAPPING_PATHS, MAX_PATH_CHARS
from models.runs import TRIGGERS

# An absolute bound, whatever the settings: a sequence number is an index into a run's bitmaps.
MAX_SEQ = 100_000_000
Seq = Annotated[int, Meta(ge=0, lt=MAX_SEQ)]
Count = Annotated[int, Meta(ge=0, lt=MAX_SEQ + 1)]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Url = Annotated[str, Meta(min_length=1, max_length=8192)]
Trigger = Literal[TRIGGERS]  # type: ignore[valid-type]
Outcome = Literal["created", "updated", "unchanged", "failed"]
Format = Literal[FORMATS]  # type: ignore[valid-type]
MappingPath = Annotated[str, Meta(min_length=1, max_length=MAX_PATH_CHARS)]
RAW_CLIP = 4096  # bytes of a bad message kept in its jobs.dlq record


class BadMessage(ValueError):
    """A message that does not decode into its topic's model; ``str()`` says why, for the DLQ record."""


# --- commands --------------------------------------------------------------------------------


class Command(TypedDict):
    """``commands``: import one feed once (``models.runs.run_request``), or republish some items (a repair)."""

    runId: Id
    sourceUrl: Url
    sourceName: str
    trigger: Trigger
    requestedAt: str
    repairSeqs: NotRequired[list[Seq]]
    replayOf: NotRequired[Id]  # trigger ``replay``: the run whose stored payload is parsed instead of a fetch
    format: NotRequired[Format]
    mapping: NotRequired[FeedMapping | None]


class FeedMapping(TypedDict):
    """A feed's mapping (SPEC §3a) as the registry stores it; its rules are checked again by the parse."""

    item: NotRequired[Annotated[str, Meta(max_length=MAX_PATH_CHARS)]]
    fields: NotRequired[dict[str, MappingPath | Annotated[list[MappingPath], Meta(max_length=MAX_MAPPING_PATHS)]]]


# --- jobs.parsed -----------------------------------------------------------------------------


class Posting(TypedDict):
    """A normalised posting (``models.postings.posting_json``), the fields SPEC §3 stores in ``jobs``."""

    dedupeKey: Id
    sourceUrl: Url
    sourceName: str
    externalId: str
    title: str
    company: str
    location: str
    jobType: str
    categories: list[str]
    region: str
    url: str
    description: str
    publishedAt: str | None
    fingerprint: Id


class ParsedItem(Posting):
    """A posting of a run, with its sequence number in the feed."""

    seq: Seq


class PostingsEnvelope(TypedDict):
    """``jobs.parsed``: postings of one run that share a partition (``models/envelopes.py``)."""

    type: Literal["postings"]
    runId: Id
    fetchedAt: str
    items: list[ParsedItem]
    sourceAt: NotRequired[str]  # when the payload was fetched (a replay's is its original fetch); default fetchedAt


class SinglePosting(ParsedItem):
    """``jobs.parsed`` as published before envelopes: one posting with its run."""

    runId: Id
    fetchedAt: str


class Rejected(TypedDict):
    """``jobs.parsed``: MongoDB refused a posting; the dedupe table forgets its fingerprint (``models.dedupe``)."""

    type: Literal["rejected"]
    dedupeKey: Id
    fingerprint: Id
    version: NotRequired[int | None]
    runId: NotRequired[str | None]
    seq: NotRequired[int | None]
    reason: NotRequired[str]


# --- jobs.upserts ----------------------------------------------------------------------------


class Change(TypedDict):
    """A created/updated posting on its way to MongoDB, in the ``jobs.changes`` shape (SPEC §4)."""

    type: Literal["created", "updated"]
    runId: Id
    seq: Seq
    version: Annotated[int, Meta(ge=1)]
    fingerprint: Id
    occurredAt: str
    job: Posting


class ChangesEnvelope(TypedDict):
    """``jobs.upserts``: the dedupe agent's decisions for one envelope."""

    type: Literal["changes"]
    items: list[Change]


# --- import.progress -------------------------------------------------------------------------


class ItemOutcome(TypedDict):
    seq: Seq
    outcome: Outcome
    key: NotRequired[str]
    reason: NotRequired[str]
    stage: NotRequired[str]


class ProgressBase(TypedDict):
    runId: Id
    at: str


class RequestedOrStarted(ProgressBase):
    type: Literal["requested", "started"]
    sourceUrl: Url
    sourceName: NotRequired[str]
    trigger: NotRequired[Trigger]
    requestedAt: NotRequired[str]
    replayOf: NotRequired[Id]


class Fetched(ProgressBase):
    type: Literal["fetched"]
    totalFetched: Count
    failures: list[ItemOutcome]
    meta: NotRequired[dict[str, Any]]
    error: NotRequired[str | None]


class Outcomes(ProgressBase):
    type: Literal["outcomes"]
    items: list[ItemOutcome]
    batch: NotRequired[bool]
    seqs: NotRequired[dict[Outcome, list[Seq]]]


class Failed(ProgressBase):
    type: Literal["failed"]
    error: str
    meta: NotRequired[dict[str, Any]]


class Failure(TypedDict):
    key: NotRequired[str]
    reason: NotRequired[str]
    stage: NotRequired[str]


class RunRow(TypedDict, total=False):
    """What a ``timeout`` event carries of a run's import_logs row (``models.runs.ROW_FIELDS``)."""

    sourceUrl: str
    sourceName: str
    trigger: str
    requestedAt: str
    startedAt: str
    totalFetched: Count
    newJobs: Count
    updatedJobs: Count
    unchangedJobs: Count
    failedJobs: Count
    failures: list[Failure]
    failuresTruncated: bool
    meta: dict[str, Any]


class Timeout(ProgressBase):
    type: Literal["timeout"]
    afterSeconds: NotRequired[float]
    row: NotRequired[RunRow]


class Signal(ProgressBase):
    """``reconcile`` (project the run again) and ``expire`` (drop a finished run past retention)."""

    type: Literal["reconcile", "expire"]


class ProgressHead(TypedDict):
    type: str


Progress = RequestedOrStarted | Fetched | Outcomes | Failed | Timeout | Signal
PROGRESS_TYPES: dict[str, type[Any]] = {
    "requested": RequestedOrStarted, "started": RequestedOrStarted, "fetched": Fetched, "outcomes": Outcomes,
    "failed": Failed, "timeout": Timeout, "reconcile": Signal, "expire": Signal,
}

# --- decoding --------------------------------------------------------------------------------

T = TypeVar("T")


def _decoder(model: type[T]) -> Callable[[bytes], T]:
    decode = msgspec.json.Decoder(model).decode

    def run(raw: bytes) -> T:
        try:
            return decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # ValidationError is a DecodeError; both named for clarity
            raise BadMessage(str(exc)) from None

    return run


_command = _decoder(Command)
_postings = _decoder(PostingsEnvelope)
_rejected = _decoder(Rejected)
_single = _decoder(SinglePosting)
_changes = _decoder(ChangesEnvelope)
_head = _decoder(ProgressHead)
_progress = {kind: _decoder(model) for kind, model in PROGRESS_TYPES.items()}


def timestamp(value: object, where: str) -> None:
    """Refuse a timestamp ``models.runs.parse_iso`` would choke on later (in a timer, or in a write)."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise BadMessage(f"{where}: not a timestamp")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadMessage(f"{where}: not an ISO-8601 timestamp") from None


def _seqs_below(seqs: Iterable[int], limit: int, where: str) -> None:
    for seq in seqs:
        if seq >= limit:
            raise BadMessage(f"{where}: seq {seq} is beyond MAX_ITEMS_PER_FEED={limit - 1}")


def decode_command(raw: bytes, max_items: int) -> Command:
    command = _command(raw)
    timestamp(command["requestedAt"], "$.requestedAt")
    _seqs_below(command.get("repairSeqs", ()), max_items + 1, "$.repairSeqs")
    if (command["trigger"] == "replay") != ("replayOf" in command):
        raise BadMessage("$.replayOf: a replay command names the run it replays, and only a replay command does")
    return command


def decode_parsed(raw: bytes, max_items: int) -> PostingsEnvelope | Rejected:
    """A ``jobs.parsed`` value: a postings envelope (a single posting of old becomes one), or a rejected event."""
    try:
        envelope = _postings(raw)
    except BadMessage as first:
        kind = _kind(raw)
        if kind == "rejected":
            return _rejected(raw)
        if kind is not None:
            raise first
        single = _single(raw)
        envelope = {"type": "postings", "runId": single.pop("runId"), "fetchedAt": single.pop("fetchedAt"),  # type: ignore[misc]
                    "items": [single]}
    timestamp(envelope["fetchedAt"], "$.fetchedAt")
    timestamp(envelope.get("sourceAt"), "$.sourceAt")
    for index, item in enumerate(envelope["items"]):
        if item["seq"] >= max_items:
            raise BadMessage(f"$.items[{index}].seq: {item['seq']} is beyond MAX_ITEMS_PER_FEED={max_items} postings")
        timestamp(item["publishedAt"], f"$.items[{index}].publishedAt")
    return envelope


def decode_changes(raw: bytes, max_items: int) -> ChangesEnvelope:
    envelope = _changes(raw)
    for index, change in enumerate(envelope["items"]):
        if change["seq"] >= max_items:
            raise BadMessage(f"$.items[{index}].seq: {change['seq']} is beyond MAX_ITEMS_PER_FEED={max_items} postings")
        timestamp(change["occurredAt"], f"$.items[{index}].occurredAt")
        timestamp(change["job"]["publishedAt"], f"$.items[{index}].job.publishedAt")
    return envelope


def decode_progress(raw: bytes, max_items: int) -> Progress:
    kind = _head(raw)["type"]
    decode = _progress.get(kind)
    if decode is None:
        raise BadMessage(f"$.type: unknown progress event type {kind[:64]!r}")
    event: Progress = decode(raw)
    # A feed cut at MAX_ITEMS_PER_FEED announces one more item, a failed one at seq MAX_ITEMS_PER_FEED, for the rest.
    limit = max_items + 1
    timestamp(event["at"], "$.at")
    timestamp(event.get("requestedAt"), "$.requestedAt")
    if event["type"] == "fetched":
        _seqs_below((failure["seq"] for failure in event["failures"]), limit, "$.failures")
        if event["totalFetched"] > limit:
            raise BadMessage(f"$.totalFetched: {event['totalFetched']} is more than MAX_ITEMS_PER_FEED={max_items} + 1")
    elif event["type"] == "outcomes":
        _seqs_below((item["seq"] for item in event["items"]), limit, "$.items")
        for outcome, seqs in event.get("seqs", {}).items():
            _seqs_below(seqs, limit, f"$.seqs.{outcome}")
    elif event["type"] == "timeout":
        row = event.get("row", {})
        for key in ("requestedAt", "startedAt"):
            timestamp(row.get(key), f"$.row.{key}")
        if row.get("totalFetched", 0) > limit:
            raise BadMessage(f"$.row.totalFetched: {row.get('totalFetched')} is more than MAX_ITEMS_PER_FEED={max_items} + 1")
    return event


def _kind(raw: bytes) -> str | None:
    """The ``type`` of a JSON object, None when it has none; raises BadMessage when it is not an object."""
    try:
        head = msgspec.json.decode(raw, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadMessage(str(exc)) from None
    kind = head.get("type")
    return kind if isinstance(kind, str) else None


def dlq_record(reason: str, topic: str, partition: int, offset: int, raw: bytes | None) -> dict[str, Any]:
    """The ``jobs.dlq`` value of a message an agent could not decode (SPEC §4, ``stage: "decode"``).

    The raw bytes are clipped to ``RAW_CLIP`` and kept as text where they are UTF-8 (escapes for the rest).
    """
    body = raw or b""
    return {"reason": reason[:1024], "stage": "decode", "topic": topic, "partition": partition, "offset": offset,
            "payload": body[:RAW_CLIP].decode("utf-8", "backslashreplace"), "bytes": len(body),
            "clipped": len(body) > RAW_CLIP}
