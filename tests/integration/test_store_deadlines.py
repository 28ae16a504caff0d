"""A store that stops answering: the worker's store calls end at their deadline and are retried, never hang.

The stand-in store is a TCP server on 127.0.0.1 that speaks just enough of the MongoDB wire
protocol to be discovered (it answers the ``hello`` handshake) and then never answers a command,
like a FerretDB wedged on an update.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import bson
import pytest

from agents.sink import write_batch
from models.registry import FeedEntry
from streams.settings import Settings
from streams.store import Store, unreachable, until_reachable
from tests.conftest import Stack

pytestmark = pytest.mark.integration

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
HANDSHAKE = {"hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions"}
DEADLINE_SECONDS = 1.0


class SilentStore:
    """Answers the handshake, then swallows every other command without a reply."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.swallowed: list[str] = []
        self.clients: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for client in self.clients:
                client.close()
            await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                command = self.command_of(opcode, body)
                name = next(iter(command), "")
                if name not in HANDSHAKE:
                    self.swallowed.append(name)
                    continue  # never answered: the client's deadline is all that ends the wait
                writer.write(self.reply(opcode, request_id, self.answer(name)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    def command_of(opcode: int, body: bytes) -> dict[str, Any]:
        if opcode == OP_MSG:  # flagBits, then section kind 0: the command document
            start = 5
        elif opcode == OP_QUERY:  # flags, full collection name (C string), skip, limit, query
            start = body.index(b"\x00", 4) + 1 + 8
        else:
            return {}
        size = struct.unpack_from("<i", body, start)[0]
        return dict(bson.decode(body[start:start + size]))

    @staticmethod
    def answer(name: str) -> dict[str, Any]:
        if name not in ("hello", "ismaster", "isMaster"):
            return {"ok": 1.0}
        return {"ok": 1.0, "ismaster": True, "isWritablePrimary": True, "helloOk": True, "minWireVersion": 0,
                "maxWireVersion": 21, "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000, "localTime": datetime.now(UTC), "connectionId": 1}

    @staticmethod
    def reply(opcode: int, request_id: int, document: dict[str, Any]) -> bytes:
        encoded = bson.encode(document)
        if opcode == OP_QUERY:
            payload, reply_opcode = struct.pack("<iqii", 0, 0, 0, 1) + encoded, OP_REPLY
        else:
            payload, reply_opcode = struct.pack("<I", 0) + b"\x00" + encoded, OP_MSG
        return struct.pack("<iiii", 16 + len(payload), 0, request_id, reply_opcode) + payload


@pytest.fixture
async def silent_store() -> AsyncIterator[SilentStore]:
    server = SilentStore()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def store(silent_store: SilentStore) -> AsyncIterator[Store]:
    """The worker's Store on the silent server, with a short MONGO_TIMEOUT_SECONDS."""
    settings = Settings.from_env({"MONGO_URL": f"mongodb://127.0.0.1:{silent_store.port}/?directConnection=true",
                                  "MONGO_DB": "silent", "MONGO_TIMEOUT_SECONDS": str(DEADLINE_SECONDS)})
    store = Store(settings)
    yield store
    await store.close()


def batch() -> list[dict[str, Any]]:
    return [{"type": "created", "runId": "r1", "seq": 0, "version": 1, "fingerprint": "f", "occurredAt": "2025-01-06T10:00:00Z",
             "job": {"dedupeKey": "k", "sourceUrl": "https://x/feed", "title": "Job", "publishedAt": None, "fingerprint": "f"}}]


async def test_a_write_the_store_never_answers_ends_at_the_configured_deadline(store: Store, silent_store: SilentStore) -> None:
    started = time.monotonic()
    with pytest.raises(Exception) as raised:  # noqa: PT011 - which pymongo timeout it is, is checked below
        await asyncio.wait_for(write_batch(store, batch()), 20)  # the safety net: without a deadline this hangs
    elapsed = time.monotonic() - started
    assert not isinstance(raised.value, TimeoutError), "the store call hung until the test's own safety net"
    assert unreachable(raised.value), f"a timeout must count as the store being unreachable, got {raised.value!r}"
    assert DEADLINE_SECONDS * 0.8 <= elapsed <= DEADLINE_SECONDS + 2.0
    assert silent_store.swallowed == ["insert"], "the deadline ended a command in flight, not the connection attempt"


async def test_a_timed_out_write_is_retried_with_back_off_and_the_batch_held(store: Store, silent_store: SilentStore) -> None:
    retries: list[float] = []
    held = asyncio.create_task(until_reachable(partial(write_batch, store, batch()), "batch (not acked)",
                                               on_retry=lambda: retries.append(time.monotonic())))
    try:
        deadline = time.monotonic() + 20
        while len(retries) < 3 and time.monotonic() < deadline:
            assert not held.done(), f"the batch was given up instead of held: {held.exception()!r}"
            await asyncio.sleep(0.1)
    finally:
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
    assert len(retries) == 3, "each attempt must end at its deadline and be tried again"
    assert silent_store.swallowed == ["insert"] * 3
    first_gap, second_gap = retries[1] - retries[0], retries[2] - retries[1]
    assert second_gap > first_gap, "the pause between attempts grows (back-off)"


async def test_the_worker_queries_are_accepted_by_the_real_store_under_a_deadline(stack: Stack, unique: str) -> None:
    """pymongo sends maxTimeMS with every command once there is a deadline; FerretDB refuses it on some (distinct)."""
    store = Store(Settings(mongo_url=stack.mongo_url, mongo_db=f"deadline_{unique}", mongo_timeout_seconds=30))
    try:
        now = datetime.now(UTC)
        assert await store.seed_feeds([FeedEntry("https://x/a", "A"), FeedEntry("https://x/b", "B")], now) == 2
        assert [doc["url"] for doc in await store.enabled_feeds()] == ["https://x/a", "https://x/b"]
        await store.import_logs.insert_many([{"_id": f"r{i}", "runId": f"r{i}", "sourceUrl": url, "status": status}
                                             for i, (url, status) in enumerate([("https://x/a", "running"), ("https://x/a", "pending"),
                                                                                ("https://x/b", "completed")])])
        assert await store.active_sources() == {"https://x/a"}
        # The schedule's memory (agents/scheduler.py): each feed's latest scheduled run since a moment.
        hour = timedelta(hours=1)
        await store.import_logs.insert_many([
            {"_id": f"s{i}", "runId": f"s{i}", "sourceUrl": url, "status": "completed", "trigger": trigger, "requestedAt": at}
            for i, (url, trigger, at) in enumerate([("https://x/c", "schedule", now - hour / 4), ("https://x/d", "manual", now - hour / 4),
                                                    ("https://x/e", "schedule", now - 2 * hour), ("https://x/f", "schedule", now),
                                                    ("https://x/c", "schedule", now - hour / 2)])])
        latest = await store.last_scheduled(now - hour)
        assert sorted(latest) == ["https://x/c", "https://x/f"]
        assert abs(latest["https://x/c"] - (now - hour / 4)) < timedelta(milliseconds=1)  # the store keeps milliseconds
        assert await store.last_scheduled(now + hour) == {}
    finally:
        await store.client.drop_database(f"deadline_{unique}")
        await store.close()
