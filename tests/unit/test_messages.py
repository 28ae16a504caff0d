"""Every message the agents read decodes from what jobstream itself sends, and nothing else does (issue 22)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest

from agents.inbox import Inbox
from agents.metrics import MESSAGES_REFUSED as REFUSED
from models.dedupe import rejected_event
from models.envelopes import postings_envelope
from models.feed import JobPosting
from models.feedstream import tail_failure
from models.messages import (
    MAX_SEQ,
    BadMessage,
    decode_changes,
    decode_command,
    decode_parsed,
    decode_progress,
    dlq_record,
)
from models.postings import change_event, posting_json
from models.runs import (
    compact_failures,
    iso,
    outcomes_event,
    reconcile_event,
    requested_event,
    run_request,
    timeout_event,
)

NOW = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)
AT = iso(NOW)
MAX_ITEMS = 1000


def posting(n: int) -> dict[str, Any]:
    job = JobPosting.build(source_url="https://x/feed", external_id=f"job-{n}", title=f"Engineer {n}", company="ACME",
                           categories=("a", "b"), published_at=NOW)
    return {**posting_json(job), "seq": n}


def test_what_jobstream_sends_decodes_to_the_same_values() -> None:
    command = run_request("https://x/feed", "x", "manual", NOW)
    assert decode_command(orjson.dumps(command), MAX_ITEMS) == command
    repair = {**command, "repairSeqs": [0, 5]}
    assert decode_command(orjson.dumps(repair), MAX_ITEMS) == repair
    replay = run_request("https://x/feed", "x", "replay", NOW, replay_of="20250106T100000-abc")
    assert decode_command(orjson.dumps(replay), MAX_ITEMS) == replay
    replayed = postings_envelope("r1", AT, [orjson.dumps(posting(0))], "2025-01-01T00:00:00Z")
    assert decode_parsed(replayed, MAX_ITEMS)["sourceAt"] == "2025-01-01T00:00:00Z"  # type: ignore[typeddict-item]
    mapped = run_request("https://x/feed", "x", "manual", NOW, feed_format="xml",
                         mapping={"item": "jobs/job", "fields": {"title": "t", "url": ["a/@href", "b"]}})
    assert decode_command(orjson.dumps(mapped), MAX_ITEMS) == mapped
    assert "format" not in command  # an auto feed's command is as before

    items = [posting(0), posting(1)]
    envelope = postings_envelope("r1", AT, [orjson.dumps(item) for item in items])
    assert decode_parsed(envelope, MAX_ITEMS) == {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": items}
    single = {**posting(3), "runId": "r1", "fetchedAt": AT}  # as published before envelopes
    assert decode_parsed(orjson.dumps(single), MAX_ITEMS) == {"type": "postings", "runId": "r1", "fetchedAt": AT,
                                                               "items": [posting(3)]}
    change = change_event({**items[0], "runId": "r1"}, "created", 1, AT)
    rejected = rejected_event(change, "write error 2: x")
    assert decode_parsed(orjson.dumps(rejected), MAX_ITEMS) == rejected
    assert decode_changes(orjson.dumps({"type": "changes", "items": [change]}), MAX_ITEMS)["items"] == [change]

    failures = compact_failures([{"seq": 1, "key": "k", "reason": "no title", "stage": "parse"}, {"seq": 2}], 1)
    row = {"runId": "r1", "sourceUrl": "https://x/feed", "requestedAt": NOW, "totalFetched": 3, "newJobs": 1,
           "failures": [{"key": "k", "reason": "r", "stage": "parse"}]}
    events = [
        requested_event(command),
        {"runId": "r1", "at": AT, "type": "started", "sourceUrl": "https://x/feed", "sourceName": "x", "trigger": "cli",
         "requestedAt": AT},
        {"runId": "r1", "at": AT, "type": "fetched", "totalFetched": MAX_ITEMS + 1, "meta": {"bytes": 5},
         "failures": [tail_failure(MAX_ITEMS, "the feed has more items than MAX_ITEMS_PER_FEED")], "error": "cut"},
        outcomes_event("r1", failures, AT, batch=True, seqs={"created": [0], "unchanged": [3, 4]}),
        {"runId": "r1", "at": AT, "type": "failed", "error": "fetch failed: 500", "meta": {"httpStatus": 500}},
        timeout_event(row, AT, 900.0),
        reconcile_event({"runId": "r1"}, AT),
        {"type": "expire", "runId": "r1", "at": AT},
    ]
    for event in events:
        assert decode_progress(orjson.dumps(event), MAX_ITEMS) == event


GOOD_CHANGE = change_event({**posting(0), "runId": "r1"}, "updated", 2, AT)
BAD: list[tuple[str, Any, str]] = [
    # (decoder, value, what the reason names)
    ("command", b"not json", "malformed"),
    ("command", b"", "truncated"),
    ("command", {"runId": "r1"}, "missing required field"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "trigger": "nightly"}, "trigger"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "requestedAt": "yesterday"}, "requestedAt"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "repairSeqs": [10**11]}, "repairSeqs"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "repairSeqs": [MAX_ITEMS + 1]}, "repairSeqs"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "trigger": "replay"}, "replayOf"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "replayOf": "r0"}, "replayOf"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "format": "json"}, "format"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "format": "xml", "mapping": {"item": 3}}, "mapping.item"),
    ("command", {**run_request("https://x/f", "x", "manual", NOW), "format": "xml", "mapping": {"fields": {"t": [""]}}},
     "mapping.fields"),
    ("parsed", [1, 2], "Expected `object`"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{**posting(0), "seq": 10**11}]}, "seq"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{**posting(0), "seq": MAX_ITEMS}]}, "seq"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{**posting(0), "seq": -1}]}, "seq"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": "soon", "items": [posting(0)]}, "fetchedAt"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{"seq": 0}]}, "missing required field"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{**posting(0), "publishedAt": "x"}]},
     "publishedAt"),
    ("parsed", {"type": "postings", "runId": "r1", "fetchedAt": AT, "items": [{**posting(0), "title": 7}]}, "title"),
    ("parsed", {"type": "zzz", "runId": "r1"}, "type"),
    ("parsed", {"type": "rejected", "dedupeKey": "k"}, "fingerprint"),
    ("parsed", {"runId": "r1"}, "missing required field"),
    ("changes", {"type": "changes", "items": [{**GOOD_CHANGE, "seq": 10**11}]}, "seq"),
    ("changes", {"type": "changes", "items": [{**GOOD_CHANGE, "version": "2"}]}, "version"),
    ("changes", {"type": "changes", "items": [{**GOOD_CHANGE, "occurredAt": 5}]}, "occurredAt"),
    ("changes", {"type": "changes", "items": [{**GOOD_CHANGE, "occurredAt": "now"}]}, "occurredAt"),
    ("changes", {"type": "changes", "items": [{k: v for k, v in GOOD_CHANGE.items() if k != "job"}]}, "job"),
    ("changes", {"items": []}, "type"),
    ("progress", {"type": "outcomes", "runId": "r1", "at": "not a time", "items": []}, "$.at"),
    ("progress", {"type": "outcomes", "runId": "r1", "at": AT, "items": [], "seqs": {"unchanged": [10**11]}}, "seqs"),
    ("progress", {"type": "outcomes", "runId": "r1", "at": AT, "items": [], "seqs": {"lost": [1]}}, "lost"),
    ("progress", {"type": "outcomes", "runId": "r1", "at": AT, "items": [{"seq": 1, "outcome": "created"}] * 1
                  + [{"seq": MAX_ITEMS + 1, "outcome": "failed"}]}, "seq"),
    ("progress", {"type": "fetched", "runId": "r1", "at": AT, "totalFetched": 10**11, "failures": []}, "totalFetched"),
    ("progress", {"type": "fetched", "runId": "r1", "at": AT, "totalFetched": "3", "failures": []}, "totalFetched"),
    ("progress", {"type": "launched", "runId": "r1", "at": AT}, "unknown progress event type"),
    ("progress", {"type": "failed", "at": AT, "error": "x"}, "runId"),
    ("progress", {"type": "timeout", "runId": "r1", "at": AT, "row": {"newJobs": "many"}}, "newJobs"),
    ("progress", {"type": "timeout", "runId": "r1", "at": AT, "row": {"startedAt": "then"}}, "startedAt"),
    ("progress", {"type": "started", "runId": "r1", "at": AT}, "sourceUrl"),
    ("progress", b"\xff\xfe", "malformed"),
]
DECODERS = {"command": decode_command, "parsed": decode_parsed, "changes": decode_changes, "progress": decode_progress}


@pytest.mark.parametrize(("decoder", "value", "named"), BAD, ids=[f"{d}-{n}" for n, (d, _, _) in enumerate(BAD)])
def test_a_malformed_message_is_refused_with_a_reason_that_names_the_fault(decoder: str, value: Any, named: str) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    with pytest.raises(BadMessage) as info:
        DECODERS[decoder](raw, MAX_ITEMS)
    assert named in str(info.value), str(info.value)


def test_sequence_numbers_are_bounded_whatever_the_settings() -> None:
    """A seq of 10**11 allocated 12.5 GB of run bitmap; past MAX_SEQ no setting lets one through."""
    event = {"type": "outcomes", "runId": "r1", "at": AT, "items": [], "seqs": {"created": [MAX_SEQ]}}
    with pytest.raises(BadMessage):
        decode_progress(orjson.dumps(event), 10**12)


def test_the_dlq_record_names_where_the_message_was_and_clips_it() -> None:
    record = dlq_record("JSON is malformed", "jobstream.commands", 3, 17, b"\xff" + b"x" * 10_000)
    assert record["stage"] == "decode" and record["topic"] == "jobstream.commands"
    assert (record["partition"], record["offset"], record["bytes"], record["clipped"]) == (3, 17, 10_001, True)
    assert record["payload"].startswith("\\xffxxx") and len(record["payload"]) == 4096 + 3
    assert dlq_record("empty", "t", 0, 0, None)["payload"] == ""


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    async def send(self, *, key: Any, value: dict[str, Any]) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Message:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset, self.key = "jobstream.commands", 2, offset, b"https://x/feed"


class Event:
    def __init__(self, offset: int, value: bytes | None) -> None:
        self.value, self.message = value, Message(offset)


async def test_the_inbox_passes_good_messages_on_and_sends_each_bad_one_to_the_dlq_once() -> None:
    good = run_request("https://x/feed", "x", "manual", NOW)
    events = [Event(0, orjson.dumps(good)), Event(1, b"{"), Event(2, None), Event(3, orjson.dumps(good))]
    dlq = FakeTopic()
    before = REFUSED.labels(topic="jobstream.commands")._value.get()
    received = await Inbox(decode_command, cast(Any, dlq), MAX_ITEMS).open(cast(Any, events))
    assert [(r.value, r.message.offset) for r in received] == [(good, 0), (good, 3)]
    assert [(key, value["offset"], value["stage"]) for key, value in dlq.sent] == [
        (b"https://x/feed", 1, "decode"), (b"https://x/feed", 2, "decode")]
    assert REFUSED.labels(topic="jobstream.commands")._value.get() - before == 2
