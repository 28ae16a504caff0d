"""The API's Kafka clients outlive a broker that is away: the producer start and the import.logs follower retry.

Fakes stand in for aiokafka; each test waits one real back-off step (0.5 s), asserts nothing about time.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from api import kafka
from api.events import LogHub
from api.kafka import KafkaLink, follow_import_logs
from streams.settings import Settings

TP = TopicPartition("jobstream.import.logs", 0)


class FakeProducer:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.stopped = False

    async def start(self) -> None:
        if self.fails:
            raise ConnectionError("broker away")

    async def stop(self) -> None:
        self.stopped = True


async def test_the_producer_is_started_again_until_the_broker_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    producers = [FakeProducer(fails=True), FakeProducer(fails=False)]
    made = iter(producers)
    monkeypatch.setattr(kafka, "producer_for", lambda _settings: next(made))
    link = KafkaLink(Settings())
    await asyncio.wait_for(link.connect(), 30)  # a safety net, not a timing assertion
    assert link.producer is producers[1]
    assert link.started.is_set()
    assert producers[0].stopped, "a producer that failed to start is closed before the next try"
    assert link.last_error == "ConnectionError: broker away"


class FakeConsumer:
    """Delivers ``records`` in one batch, then raises ``then`` (or waits forever when it is None)."""

    def __init__(self, records: list[bytes], then: Exception | None) -> None:
        self.records, self.then = records, then
        self.stopped = False
        self.delivered = False

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        if not self.delivered:
            self.delivered = True
            return {TP: [SimpleNamespace(offset=offset, value=value) for offset, value in enumerate(self.records)]}
        if self.then is not None:
            raise self.then
        await asyncio.Event().wait()
        return {}

    async def stop(self) -> None:
        self.stopped = True


async def test_the_follower_retries_its_connection_and_reconnects_after_losing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = json.dumps({"runId": "r1", "status": "running"}).encode()
    lost = FakeConsumer([snapshot], then=ConnectionError("connection lost"))
    idle = FakeConsumer([], then=None)
    opened: list[dict[TopicPartition, int]] = []
    outcomes: list[Exception | FakeConsumer] = [OSError("no broker"), lost, idle]

    async def open_follower(_settings: Settings, _topic: str, positions: dict[TopicPartition, int]) -> FakeConsumer:
        opened.append(dict(positions))
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(kafka, "open_follower", open_follower)
    hub, ready, records = LogHub(), asyncio.Event(), []
    follower = asyncio.create_task(follow_import_logs(Settings(), hub, ready, lambda: records.append(1)))
    try:
        for _ in range(3000):  # a safety net of 30 s, not a timing assertion
            if idle.delivered:
                break
            await asyncio.sleep(0.01)
        assert idle.delivered, "the follower did not reconnect"
        assert ready.is_set()
        assert records == [1]
        assert lost.stopped, "the lost consumer is closed before the next one opens"
        assert opened[2] == {TP: 1}, "the next consumer starts after the last record delivered"
    finally:
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    assert idle.stopped, "cancelling the follower closes its consumer"
