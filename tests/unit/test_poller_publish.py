"""The poller sends a feed's chunks ahead of the broker's acknowledgements, bounded, and awaits them all before it returns."""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from agents.fetch import FetchResult, Validators
from agents.parsing import ParseFailed, PoolClosed
from agents.poller import COMPRESS_SLICE, PUBLISH_AHEAD, Poller, compressed_within
from models.feedstream import FeedSummary
from streams.settings import Settings


class FakeCollection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def find_one(self, query: dict[str, Any], *_args: Any) -> dict[str, Any]:
        return {"_id": query["_id"]}  # every payload is stored

    async def update_one(self, query: dict[str, Any], update: dict[str, Any], upsert: bool = False) -> None:
        self.calls.append(("update", query))

    async def delete_one(self, query: dict[str, Any]) -> None:
        self.calls.append(("delete", query))


class FakeStore:
    """The store calls the poller makes around a run: raw_feeds read, fetch_state kept or forgotten."""

    def __init__(self) -> None:
        self.raw_feeds = FakeCollection()
        self.fetch_state = FakeCollection()

    async def write(self, command: Any) -> Any:
        return await command()


class FakeTopic:
    """Records sends; each returns a future the test resolves (the broker's acknowledgement)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, *, key: str, value: dict[str, Any] | bytes, partition: int | None = None) -> asyncio.Future[None]:
        self.sent.append(orjson.loads(value) if isinstance(value, bytes) else value)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


class FakeJob:
    def __init__(self, chunks: int, fail_after: int | None) -> None:
        self.chunks, self.fail_after = chunks, fail_after
        self.summary: FeedSummary | None = None
        self.handed_out, self.waited = 0, 0.0

    async def _rows(self) -> AsyncIterator[list[tuple[Any, ...]]]:
        for n in range(self.chunks):
            if n == self.fail_after:
                raise ParseFailed("parse timed out", self.handed_out)
            self.handed_out += 2
            yield [(seq, orjson.dumps({"dedupeKey": f"k{seq}", "seq": seq}), seq % 2) for seq in (2 * n, 2 * n + 1)]
        self.summary = FeedSummary("rss", "t", self.handed_out)

    def __aiter__(self) -> AsyncIterator[list[tuple[Any, ...]]]:
        return self._rows()


class FakeParsers:
    def __init__(self, job: FakeJob) -> None:
        self.job = job

    @contextlib.asynccontextmanager
    async def parse(self, *_args: Any, **_options: Any) -> AsyncIterator[FakeJob]:
        yield self.job


async def run(chunks: int, fail_after: int | None = None) -> tuple[FakeTopic, asyncio.Task[Any], list[int]]:
    """Start a publish of ``chunks`` chunks (two partitions each); ack sends one by one, noting how many
    envelopes were waiting for an ack whenever the poller stopped to wait."""
    parsed = FakeTopic()
    topics = cast(Any, type("Topics", (), {"parsed": parsed, "progress": FakeTopic()})())
    poller = Poller(cast(Any, None), cast(Any, FakeParsers(FakeJob(chunks, fail_after))), topics, Settings.from_env({}))
    command = {"runId": "r1", "sourceUrl": "https://x/feed", "sourceName": "x"}
    task = asyncio.ensure_future(poller.parse_and_publish(command, b"<rss/>", None))
    waiting: list[int] = []
    acked = 0
    while not task.done():
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if acked < len(parsed.acks):
            waiting.append(len(parsed.acks) - acked)
            parsed.acks[acked].set_result(None)
            acked += 1
    return parsed, task, waiting


async def test_chunks_go_out_ahead_of_acks_bounded_and_all_acked_before_returning() -> None:
    parsed, task, waiting = await run(chunks=12)
    summary, handed_out, _ = task.result()
    assert handed_out == 24 and summary.items == 24
    assert [item["seq"] for envelope in parsed.sent for item in envelope["items"]] == list(range(24))
    assert all(ack.done() for ack in parsed.acks), "returned before the broker had every chunk"
    assert max(waiting) == 2 * (PUBLISH_AHEAD + 1), "chunks are sent ahead, at most PUBLISH_AHEAD beyond the one awaited"


async def test_a_parse_cut_short_still_awaits_what_was_sent() -> None:
    parsed, task, _ = await run(chunks=12, fail_after=7)
    with pytest.raises(ParseFailed) as failed:
        task.result()
    assert failed.value.handed_out == 14 and len(parsed.sent) == 14
    assert all(ack.done() for ack in parsed.acks), "the items handed out are announced: they must be in the broker"


class AckedTopic(FakeTopic):
    """A topic whose broker acknowledges every send at once."""

    async def send(self, *, key: str, value: dict[str, Any] | bytes, partition: int | None = None) -> asyncio.Future[None]:
        ack = await super().send(key=key, value=value, partition=partition)
        ack.set_result(None)
        return ack


class RecordingParsers:
    """Hands out a fresh two-chunk job per parse and records the payload each parse was given."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    @contextlib.asynccontextmanager
    async def parse(self, payload: bytes | bytearray, *_args: Any, **_options: Any) -> AsyncIterator[FakeJob]:
        self.payloads.append(bytes(payload))
        yield FakeJob(2, None)


def acked_poller(parsers: RecordingParsers) -> tuple[Poller, AckedTopic]:
    parsed = AckedTopic()
    topics = cast(Any, type("Topics", (), {"parsed": parsed, "progress": AckedTopic()})())
    return Poller(cast(Any, FakeStore()), cast(Any, parsers), topics, Settings.from_env({})), parsed


async def test_the_parse_starts_while_the_payload_is_kept_but_nothing_is_published_before() -> None:
    parsers = RecordingParsers()
    poller, parsed = acked_poller(parsers)
    kept: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    payload = bytearray(b"<rss>fresh</rss>")
    task = asyncio.ensure_future(poller.parse_and_publish({"runId": "r1", "sourceUrl": "https://x/feed"}, payload, None, kept))
    for _ in range(20):
        await asyncio.sleep(0)
    assert parsers.payloads == [b"<rss>fresh</rss>"], "the parse has the payload while it is being stored"
    assert parsed.sent == [] and payload, "nothing published, and the buffer kept, before the payload is stored"
    kept.set_result(None)
    summary, handed_out, _ = await task
    assert handed_out == summary.items == 4
    assert [item["seq"] for envelope in parsed.sent for item in envelope["items"]] == [0, 1, 2, 3]
    assert payload == bytearray(), "the fetched buffer is freed once stored and handed to the parse"


async def test_a_run_publishes_the_payload_another_delivery_stored_first() -> None:
    parsers = RecordingParsers()
    poller, parsed = acked_poller(parsers)
    theirs: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    theirs.set_result(b"<rss>stored first</rss>")

    async def load_payload(_command: dict[str, Any]) -> tuple[FetchResult, asyncio.Future[bytes | None] | None]:
        return FetchResult(200, bytearray(b"<rss>fetched now</rss>"), Validators(), 1), theirs

    poller.load_payload = load_payload  # type: ignore[method-assign,assignment]
    command = {"runId": "r1", "sourceUrl": "https://x/feed", "sourceName": "x", "trigger": "manual", "requestedAt": "t"}
    await poller.run_import(command)
    assert parsers.payloads == [b"<rss>fetched now</rss>", b"<rss>stored first</rss>"]
    assert [item["seq"] for envelope in parsed.sent for item in envelope["items"]] == [0, 1, 2, 3], "only the second parse published"


def test_compression_of_a_payload_stops_once_it_passes_the_limit() -> None:
    body = b"".join(b"<item><title>job %d</title></item>" % i for i in range(50_000))
    whole = compressed_within(body, len(body))
    assert whole is not None and zlib.decompress(whole) == body
    assert compressed_within(body, len(whole)) == whole, "exactly at the limit is kept"
    assert compressed_within(body, len(whole) - 1) is None
    noise = bytearray(random.Random(7).randbytes(3 * COMPRESS_SLICE))  # noqa: S311 - test data, not a secret
    assert compressed_within(noise, COMPRESS_SLICE // 2) is None
    noise.clear()  # the view on the buffer was released: it can be freed


class StoppingParsers:
    """A pool that is closed (the worker is stopping) while the second of two runs parses."""

    closed = False

    @contextlib.asynccontextmanager
    async def parse(self, payload: bytes | bytearray, *_args: Any, **_options: Any) -> AsyncIterator[FakeJob]:
        if b"second" in bytes(payload):
            self.closed = True
            raise PoolClosed("parse abandoned: the worker is stopping")
        yield FakeJob(1, None)


class Held:
    """A Faust message as ``faust_internals.release`` sees it."""

    def __init__(self, offset: int) -> None:
        self.topic, self.offset, self.acked = "jobstream.commands", offset, False


class FakeStream:
    """What ``poll`` uses of a Faust stream: ``noack_take`` batches, ``ack``, and the consumer's unacked set."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.acked: list[Any] = []
        self.app = type("App", (), {"consumer": type("Consumer", (), {"_unacked_messages": {e.message for e in events}})()})()

    async def noack_take(self, _size: int, within: float) -> AsyncIterator[list[Any]]:
        yield list(self.events)

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


async def test_runs_abandoned_by_a_stopping_worker_are_neither_failed_nor_acked() -> None:
    """Their commands go to the next owner of the partition, which runs them again from the stored payload."""
    progress = AckedTopic()
    commands = type("Topic", (), {"get_topic_name": lambda self: "jobstream.commands"})()
    topics = cast(Any, type("Topics", (), {"parsed": AckedTopic(), "progress": progress, "commands": commands,
                                           "dlq": AckedTopic()})())
    poller = Poller(cast(Any, FakeStore()), cast(Any, StoppingParsers()), topics, Settings.from_env({}))
    bodies = {"r1": b"<rss>first</rss>", "r2": b"<rss>second</rss>"}

    async def load_payload(command: dict[str, Any]) -> tuple[FetchResult, None]:
        return FetchResult(200, bodies[command["runId"]], Validators(), 1), None

    poller.load_payload = load_payload  # type: ignore[method-assign,assignment]
    events = [type("Event", (), {"value": orjson.dumps({"runId": run_id, "sourceUrl": f"https://x/{run_id}", "sourceName": "x",
                                                        "trigger": "manual", "requestedAt": "2025-01-06T10:00:00Z"}),
                                 "message": Held(n)})()
              for n, run_id in enumerate(bodies)]
    stream = FakeStream(events)
    await poller.poll(cast(Any, stream))
    assert [orjson.loads(event.value)["runId"] for event in stream.acked] == ["r1"], "only the run that finished is acked"
    assert not any(m.offset == 1 for m in stream.app.consumer._unacked_messages), "the stop does not wait for it"
    kinds = [(event["runId"], event["type"]) for event in progress.sent if "type" in event]
    assert ("r2", "failed") not in kinds and ("r1", "fetched") in kinds, kinds
