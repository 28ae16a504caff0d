"""Requesting import runs: the one path the scheduler, the API and the CLI all use."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from models.registry import FeedEntry
from models.runs import requested_event, run_request
from streams.settings import Settings

# (topic, key, value) → delivered to the broker
Send = Callable[[str, str, dict[str, Any]], Awaitable[None]]


async def request_runs(send: Send, settings: Settings, feeds: Iterable[FeedEntry], trigger: str) -> list[dict[str, Any]]:
    """Announce each run as pending (import.progress) before asking the poller for it (commands)."""
    commands = []
    for feed in feeds:
        command = run_request(feed.url, feed.name, trigger, datetime.now(UTC), feed_format=feed.format, mapping=feed.mapping)
        await send(settings.topic("import.progress"), command["runId"], requested_event(command))
        await send(settings.topic("commands"), feed.url, command)
        commands.append(command)
    return commands


async def request_replay(send: Send, settings: Settings, feed: FeedEntry, replay_of: str) -> dict[str, Any]:
    """Announce and ask for a replay run: the poller parses the payload stored under ``replay_of`` with the
    feed's current format and mapping."""
    command = run_request(feed.url, feed.name, "replay", datetime.now(UTC), replay_of=replay_of,
                          feed_format=feed.format, mapping=feed.mapping)
    await send(settings.topic("import.progress"), command["runId"], requested_event(command))
    await send(settings.topic("commands"), feed.url, command)
    return command


def json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def aiokafka_sender(producer: AIOKafkaProducer) -> Send:
    """A Send over a plain aiokafka producer (API and CLI processes run no Faust app)."""

    async def send(topic: str, key: str, value: dict[str, Any]) -> None:
        await producer.send_and_wait(topic, key=key.encode(), value=json_bytes(value))

    return send


def producer_for(settings: Settings) -> AIOKafkaProducer:
    """acks=all with idempotence (SPEC §4): acknowledged once min.insync.replicas have it, never written twice by a retry."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True,
                            linger_ms=5, max_request_size=8 * 1024 * 1024)
