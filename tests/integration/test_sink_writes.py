"""The sink's writes against the real MongoDB-compatible store: replays are no-ops, rejects are reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.sink import write_batch
from streams.settings import Settings
from streams.store import Store
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def change(key: str, version: int, title: str, url: str | None = None) -> dict[str, Any]:
    fingerprint = f"{abs(hash((title, url))) % 10**40:040d}"
    return {
        "type": "created" if version == 1 else "updated", "runId": "r1", "seq": 0, "version": version,
        "fingerprint": fingerprint, "occurredAt": f"2025-01-06T10:00:0{version}Z",
        "job": {"dedupeKey": key, "sourceUrl": "https://x/feed", "externalId": key, "title": title,
                "url": url or f"https://x/{key}", "publishedAt": None, "fingerprint": fingerprint},
    }


@pytest.fixture
async def store(stack: Stack, unique: str) -> AsyncIterator[Store]:
    store = Store(Settings(mongo_url=stack.mongo_url, mongo_db=f"sink_{unique}"))
    await store.ensure_indexes()
    yield store
    await store.client.drop_database(f"sink_{unique}")
    await store.close()


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


async def test_a_posting_the_store_rejects_fails_alone(store: Store) -> None:
    await store.jobs.create_index("url", unique=True)  # a constraint the second posting breaks
    rejected = await write_batch(store, [change("a", 1, "A", url="https://x/same"), change("b", 1, "B", url="https://x/same")])
    assert list(rejected) == ["b"] and "write error" in rejected["b"]
    assert await store.jobs.count_documents({}) == 1
