"""streams.app.batches(): full batches from a backlog, no waiting out a window when nothing else is queued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from streams.faust_internals import batches


@dataclass
class FakeChannel:
    queued: list[bool]  # after each chunk: whether more events wait in the queue

    def empty(self) -> bool:
        return not self.queued.pop(0)


@dataclass
class FakeStream:
    """What ``batches`` uses of a Faust stream: ``noack_take`` chunks and the channel's queue."""

    chunks: list[list[int]]
    queued: list[bool]
    channel: FakeChannel = field(init=False)
    takes: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = FakeChannel(list(self.queued))

    async def noack_take(self, size: int, within: float) -> AsyncIterator[list[int]]:
        self.takes.append((size, within))
        for chunk in self.chunks:
            yield chunk


async def collect(stream: FakeStream, size: int, within: float) -> list[list[Any]]:
    return [batch async for batch in batches(stream, size, within)]  # type: ignore[arg-type]


async def test_a_chunk_with_nothing_queued_behind_it_is_a_batch_at_once() -> None:
    stream = FakeStream([[1, 2], [3]], queued=[False, False])
    assert await collect(stream, size=10, within=1.0) == [[1, 2], [3]]
    assert stream.takes == [(10, 0.05)]  # a short take: the window is not waited out


async def test_chunks_are_joined_while_more_is_queued_and_cut_at_the_size() -> None:
    stream = FakeStream([[1, 2, 3], [4, 5, 6], [7, 8]], queued=[True, True, False])
    assert await collect(stream, size=4, within=60.0) == [[1, 2, 3, 4], [5, 6, 7, 8]]


async def test_a_batch_closes_when_its_window_has_passed_even_with_more_queued() -> None:
    stream = FakeStream([[1], [2], [3]], queued=[True, True, True])
    assert await collect(stream, size=100, within=0.0) == [[1], [2], [3]]


async def test_an_open_batch_is_not_handed_out_when_the_stream_stops() -> None:
    # The stream stops (worker shutdown) with a batch still open: it is not handed out, and its
    # events stay unacked, so Kafka redelivers them.
    stream = FakeStream([[1, 2]], queued=[True])
    assert await collect(stream, size=10, within=60.0) == []
