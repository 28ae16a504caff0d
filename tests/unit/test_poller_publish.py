"""The poller sends a feed's chunks ahead of the broker's acknowledgements, bounded, and awaits them all before it returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from agents.parsing import ParseFailed
from agents.poller import PUBLISH_AHEAD, Poller
from models.feedstream import FeedSummary
from streams.settings import Settings


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
    async def parse(self, *_args: Any) -> AsyncIterator[FakeJob]:
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
