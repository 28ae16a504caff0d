"""The sink's writes against the real MongoDB-compatible store: replays are no-ops, rejects are reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from agents.sink import write_batch
from streams.settings import Settings
from streams.store import Store
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def change(key: str, version: int, title: str, url: str | None = None, company: str = "Acme") -> dict[str, Any]:
    fingerprint = f"{abs(hash((title, url))) % 10**40:040d}"
    return {
        "type": "created" if version == 1 else "updated", "runId": "r1", "seq": 0, "version": version,
        "fingerprint": fingerprint, "occurredAt": f"2025-01-06T10:00:0{version}Z",
        "job": {"dedupeKey": key, "sourceUrl": "https://x/feed", "externalId": key, "title": title, "company": company,
                "url": url or f"https://x/{key}", "publishedAt": None, "fingerprint": fingerprint},
    }


# Fields of a write command that hold its statements (documents, updates, deletes).
STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}


class CommandLog(CommandListener):
    """What the store sent: statements per write command (and ids per ``$in`` read), and the most in flight."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, int]] = []  # (command, collection, statements)
        self.open: set[tuple[int, Any]] = set()
        self.most_in_flight = 0

    def started(self, event: CommandStartedEvent) -> None:
        name = event.command_name
        if name in STATEMENTS:
            size = len(event.command.get(STATEMENTS[name], []))
        elif name == "find" and isinstance(event.command.get("filter", {}).get("_id"), dict):
            size = len(event.command["filter"]["_id"].get("$in", []))
        else:
            return
        self.commands.append((name, str(event.command[name]), size))
        self.open.add((event.request_id, event.connection_id))
        self.most_in_flight = max(self.most_in_flight, len(self.open))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        self.open.discard((event.request_id, event.connection_id))

    def failed(self, event: CommandFailedEvent) -> None:
        self.open.discard((event.request_id, event.connection_id))

    def sizes(self, name: str, collection: str) -> list[int]:
        return [size for command, coll, size in self.commands if (command, coll) == (name, collection)]


MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def make_store(stack: Stack, unique: str) -> AsyncIterator[MakeStore]:
    """Stores on the test's own database (settings overridable, command listeners optional); dropped after."""
    stores: list[Store] = []

    async def make(*listeners: CommandListener, **settings: Any) -> Store:
        store = Store(Settings(mongo_url=stack.mongo_url, mongo_db=f"sink_{unique}", **settings), event_listeners=listeners)
        stores.append(store)
        await store.ensure_indexes()
        return store

    yield make
    await stores[0].client.drop_database(f"sink_{unique}")
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()


async def test_new_postings_are_inserted_and_a_replay_writes_nothing(store: Store) -> None:
    batch = [change(f"k{i}", 1, f"Job {i}") for i in range(5)]
    assert await write_batch(store, batch) == {}
    before = [doc async for doc in store.jobs.find({}).sort("_id", 1)]
    assert [doc["_id"] for doc in before] == [f"k{i}" for i in range(5)]
    assert await write_batch(store, batch) == {}, "a replayed batch is not an error"
    assert [doc async for doc in store.jobs.find({}).sort("_id", 1)] == before


async def test_update_bumps_version_and_keeps_created_at(store: Store) -> None:
    await write_batch(store, [change("k", 1, "Job")])
    assert await write_batch(store, [change("k", 2, "Better job")]) == {}
    doc = await store.jobs.find_one({"_id": "k"})
    assert doc is not None and doc["version"] == 2 and doc["title"] == "Better job"
    assert doc["createdAt"].isoformat().startswith("2025-01-06T10:00:01") and doc["updatedAt"] > doc["createdAt"]


async def test_newest_change_of_a_key_in_one_batch_wins(store: Store) -> None:
    assert await write_batch(store, [change("k", 1, "Job"), change("k", 2, "Job v2")]) == {}
    doc = await store.jobs.find_one({"_id": "k"})
    assert doc is not None and (doc["version"], doc["title"]) == (2, "Job v2")


async def test_stale_document_under_a_created_key_is_repaired(store: Store) -> None:
    await store.jobs.insert_one({"_id": "k", "dedupeKey": "k", "title": "left over", "fingerprint": "old", "version": 1})
    assert await write_batch(store, [change("k", 1, "Fresh")]) == {}
    doc = await store.jobs.find_one({"_id": "k"})
    assert doc is not None and doc["title"] == "Fresh"


async def test_a_stale_writer_cannot_roll_a_newer_version_back(make_store: MakeStore) -> None:
    store = await make_store(mongo_write_batch=10)
    await write_batch(store, [change(f"k{i}", 1, f"Job {i}") for i in range(12)])
    await write_batch(store, [change("k3", 3, "Job 3 v3"), change("k11", 3, "Job 11 v3")])
    # A worker that lost its partitions flushes old versions, among current ones, in two commands.
    late = [change(f"k{i}", 2, f"Job {i} v2") for i in range(12)]
    assert await write_batch(store, late) == {}, "a superseded write is not a failed posting"
    versions = {doc["_id"]: (doc["version"], doc["title"]) async for doc in store.jobs.find({})}
    assert versions["k3"] == (3, "Job 3 v3") and versions["k11"] == (3, "Job 11 v3")
    assert all(versions[f"k{i}"] == (2, f"Job {i} v2") for i in range(12) if i not in (3, 11))
    search = {doc["_id"]: (doc["version"], doc["text"]) async for doc in store.job_search.find({})}
    assert search["k3"] == (3, "job 3 v3\nacme") and search["k0"] == (2, "job 0 v2\nacme")
    # A replayed creation under a key that moved on since is superseded too, not a repair.
    assert await write_batch(store, [change("k11", 1, "Job 11 original, different")]) == {}
    stored = await store.jobs.find_one({"_id": "k11"})
    assert stored is not None and (stored["version"], stored["title"]) == (3, "Job 11 v3")


async def test_a_posting_the_store_rejects_fails_alone(store: Store) -> None:
    await store.jobs.create_index("url", unique=True)  # a constraint the second posting breaks
    rejected = await write_batch(store, [change("a", 1, "A", url="https://x/same"), change("b", 1, "B", url="https://x/same")])
    assert list(rejected) == ["b"] and "write error" in rejected["b"]
    assert await store.jobs.count_documents({}) == 1


async def test_rejected_postings_are_named_correctly_when_the_batch_spans_several_commands(make_store: MakeStore) -> None:
    store = await make_store(mongo_write_batch=10)
    await store.jobs.create_index("url", unique=True)
    await store.jobs.insert_one({"_id": "old", "dedupeKey": "old", "url": "https://x/taken", "fingerprint": "f", "version": 1})
    batch = [change(f"p{i:02d}", 1, f"Job {i}") for i in range(35)]
    # Conflicts inside the 2nd, 3rd and 4th command (10 postings each); within one command the first wins.
    batch[17] = change("p17", 1, "Job 17", url="https://x/taken")
    batch[24] = change("p24", 1, "Job 24", url="https://x/p21")
    batch[33] = change("p33", 1, "Job 33", url="https://x/p30")
    assert sorted(await write_batch(store, batch)) == ["p17", "p24", "p33"]
    assert await store.jobs.count_documents({}) == 1 + 32
    assert await store.job_search.count_documents({}) == 32, "a rejected posting has no search document"

    # Updates that break the index, in the 2nd and 4th command of 10.
    breaking = {"p18": "https://x/p02", "p34": "https://x/p05"}
    updates = [change(key, 2, f"Job {key} v2", url=breaking.get(key))
               for key in (f"p{i:02d}" for i in range(35) if i not in (17, 24, 33))]
    rejected = await write_batch(store, updates)
    assert sorted(rejected) == ["p18", "p34"] and all("write error" in reason for reason in rejected.values())
    assert await store.jobs.count_documents({"version": 2}) == 30


async def test_created_and_updated_postings_keep_their_search_documents(store: Store) -> None:
    await write_batch(store, [change("a", 1, "Python Developer", company=" Straße AG ")])
    assert await store.job_search.find_one({"_id": "a"}) == {
        "_id": "a", "sourceUrl": "https://x/feed", "company": "strasse ag", "text": "python developer\n straße ag ".casefold(),
        "publishedAt": None, "version": 1,
    }
    assert await write_batch(store, [change("a", 1, "Python Developer", company=" Straße AG ")]) == {}, "a replay is fine"
    await write_batch(store, [change("a", 2, "Rust Developer", company="Acme")])
    document = await store.job_search.find_one({"_id": "a"})
    assert document is not None and (document["company"], document["text"]) == ("acme", "rust developer\nacme")
    assert await store.job_search.count_documents({}) == 1


async def test_a_search_document_the_store_rejects_does_not_fail_the_posting(store: Store) -> None:
    await store.job_search.create_index("text", unique=True)  # a constraint the second posting breaks
    assert await write_batch(store, [change("a", 1, "Same", company="Acme"), change("b", 1, "Same", company="Acme")]) == {}
    assert await store.jobs.count_documents({}) == 2
    assert await store.job_search.count_documents({}) == 1


async def test_500_updated_postings_are_written_in_small_commands_while_reads_are_served(
    make_store: MakeStore, stack: Stack, unique: str,
) -> None:
    log = CommandLog()
    store = await make_store(log)
    limit, in_flight = store.write_batch, Settings().mongo_max_inflight_writes
    assert (limit, in_flight) == (50, 2), "the documented defaults are what this test checks"
    keys = [f"job{i:03d}" for i in range(500)]
    assert await asyncio.wait_for(write_batch(store, [change(key, 1, f"Job {key}") for key in keys]), 120) == {}

    reader: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url, timeoutMS=30_000)
    jobs = reader[f"sink_{unique}"]["jobs"]
    writing = True
    answered: list[float] = []

    async def read_while_writing() -> None:
        """What the API does while the sink writes: point reads and a first page."""
        index = 0
        while writing:
            started = time.monotonic()
            assert await jobs.find_one({"_id": keys[index % 500]}) is not None
            assert len([doc async for doc in jobs.find({}, {"title": 1}).limit(20)]) == 20
            answered.append(time.monotonic() - started)
            index += 37

    readers = [asyncio.create_task(read_while_writing()) for _ in range(2)]
    try:
        updates = [change(key, 2, f"Job {key} v2") for key in keys]
        assert await asyncio.wait_for(write_batch(store, updates), 300) == {}, "one batch of 500 updates must complete"
    finally:
        writing = False
        await asyncio.wait_for(asyncio.gather(*readers), 60)  # every read answered (an assert inside would raise here)
        await reader.close()

    assert answered, "reads ran beside the write"
    assert await store.jobs.count_documents({"version": 2}) == 500
    assert {doc["_id"]: doc["title"] async for doc in store.jobs.find({}, {"title": 1})} == {key: f"Job {key} v2" for key in keys}
    assert await store.job_search.count_documents({"text": {"$regex": " v2\n"}}) == 500
    assert max(size for name, _, size in log.commands if name != "insert") <= limit, f"over MONGO_WRITE_BATCH: {log.commands}"
    assert log.sizes("update", "jobs") == [limit] * (500 // limit), "the 500 updates went as full commands of the limit"
    assert log.sizes("insert", "jobs") == [store.insert_batch] == [500], "inserts go in commands of MONGO_INSERT_BATCH"
    assert log.most_in_flight <= in_flight, f"{log.most_in_flight} write commands were in flight at once"


async def test_jobs_stored_before_job_search_existed_are_backfilled_once(store: Store) -> None:
    await write_batch(store, [change(f"k{i:04d}", 1, f"Engineer {i}") for i in range(1203)])
    await store.job_search.delete_many({"_id": {"$nin": ["k0007"]}})
    await store.job_search.update_one({"_id": "k0007"}, {"$set": {"text": "written by the sink meanwhile"}})
    assert await store.backfill_job_search(batch=100) == 1202
    assert await store.job_search.count_documents({}) == 1203
    kept = await store.job_search.find_one({"_id": "k0007"})
    assert kept is not None and kept["text"] == "written by the sink meanwhile", "a backfill never overwrites"
    one = await store.job_search.find_one({"_id": "k1202"})
    assert one is not None and one["text"] == "engineer 1202\nacme"
    assert await store.backfill_job_search(batch=100) == 0
