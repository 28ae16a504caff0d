"""The store answers like MongoDB where the local build's patches changed how it answers.

The local FerretDB pushes filters, sorts and counts down to SQLite and runs a command of updates by
``_id`` as one read and one write (deploy/ferretdb/patches). These tests pin the MongoDB semantics
those shortcuts must keep; they hold on real MongoDB too (``MONGO_URL``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import DESCENDING, UpdateOne
from pymongo.database import Database

from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def db(stack: Stack, unique: str) -> Iterator[Database[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_url, tz_aware=True, timeoutMS=60_000)
    yield client[f"t_{unique}"]
    client.drop_database(f"t_{unique}")
    client.close()


def ids(cursor: Any) -> list[Any]:
    return [doc["_id"] for doc in cursor]


def test_one_command_of_500_updates_by_id_completes_while_reads_run(db: Database[dict[str, Any]]) -> None:
    db.jobs.insert_many([{"_id": f"k{i:04d}", "version": 1, "n": i} for i in range(600)])
    stop = threading.Event()
    reads: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            reads.append(len(list(db.jobs.find({}, {"_id": 1}).sort("n", DESCENDING).limit(20))))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        operations = [UpdateOne({"_id": f"k{i:04d}"}, {"$set": {"version": 2}}, upsert=True) for i in range(550)]
        operations += [UpdateOne({"_id": f"new{i}"}, {"$set": {"version": 1}}, upsert=True) for i in range(10)]
        result = db.jobs.bulk_write(operations, ordered=False)
    finally:
        stop.set()
        thread.join(60)
    assert (result.matched_count, result.modified_count, result.upserted_count) == (550, 550, 10)
    assert result.upserted_ids == {550 + i: f"new{i}" for i in range(10)}
    assert db.jobs.count_documents({"version": 2}) == 550
    assert db.jobs.count_documents({}) == 610
    assert reads and set(reads) == {20}


def test_updates_by_id_repeating_one_id_apply_in_order(db: Database[dict[str, Any]]) -> None:
    db.c.insert_one({"_id": "a", "n": 1})
    db.c.bulk_write([UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}), UpdateOne({"_id": "a"}, {"$inc": {"n": 10}}),
                     UpdateOne({"_id": "b"}, {"$set": {"n": 5}}, upsert=True)], ordered=False)
    assert {doc["_id"]: doc["n"] for doc in db.c.find()} == {"a": 12, "b": 5}


def test_equality_matches_array_elements_null_and_missing_like_mongodb(db: Database[dict[str, Any]]) -> None:
    db.c.create_index("tags")
    db.c.insert_many([{"_id": 1, "tags": ["x", "y"]}, {"_id": 2, "tags": "x"}, {"_id": 3, "tags": "z"}, {"_id": 4},
                      {"_id": 5, "tags": None}, {"_id": 6, "tags": "[x"}, {"_id": 7, "tags": 3}])
    assert sorted(ids(db.c.find({"tags": "x"}))) == [1, 2]
    assert sorted(ids(db.c.find({"tags": None}))) == [4, 5]
    assert sorted(ids(db.c.find({"tags": {"$ne": None}}))) == [1, 2, 3, 6, 7]
    assert sorted(ids(db.c.find({"tags": {"$in": ["y", "z"]}}))) == [1, 3]
    assert sorted(ids(db.c.find({"tags": {"$gt": 2}}))) == [7]
    assert sorted(ids(db.c.find({"tags": {"$regex": "x"}}))) == [1, 2, 6]
    assert sorted(ids(db.c.find({"tags": {"$regex": "X", "$options": "i"}}))) == [1, 2, 6]
    assert db.c.count_documents({"tags": "x"}) == 2


def test_sorted_pages_with_filters_skip_and_limit_match_a_full_sort(db: Database[dict[str, Any]]) -> None:
    db.c.create_index([("day", DESCENDING), ("_id", 1)])
    db.c.create_index([("group", 1), ("day", DESCENDING), ("_id", 1)])
    start = datetime(1960, 1, 1, tzinfo=UTC)  # dates before 1970 and after 2001: numeric, not text, order
    docs = [{"_id": f"d{i:03d}", "group": f"g{i % 3}", "day": start + timedelta(days=97 * (i * 7919 % 300))} for i in range(300)]
    docs.append({"_id": "nodate", "group": "g1"})
    db.c.insert_many(docs)

    def expected(group: str | None) -> list[str]:
        chosen = [d for d in docs if group is None or d["group"] == group]
        dated = sorted((d for d in chosen if "day" in d), key=lambda d: (-d["day"].timestamp(), d["_id"]))
        return [d["_id"] for d in dated] + [d["_id"] for d in chosen if "day" not in d]

    order = [("day", DESCENDING), ("_id", 1)]
    assert ids(db.c.find({}).sort(order)) == expected(None)
    assert ids(db.c.find({"group": "g1"}).sort(order).skip(10).limit(25)) == expected("g1")[10:35]
    cut = start + timedelta(days=97 * 150)
    assert ids(db.c.find({"day": {"$lte": cut}}).sort(order).limit(40)) == [
        i for i in expected(None) if i != "nodate" and next(d for d in docs if d["_id"] == i)["day"] <= cut][:40]
    assert db.c.count_documents({}) == 301
    assert db.c.estimated_document_count() == 301
    assert db.command("count", "c", query={"group": "g1"})["n"] == 101


def test_delete_by_many_ids_removes_exactly_those(db: Database[dict[str, Any]]) -> None:
    db.c.insert_many([{"_id": f"k{i}"} for i in range(1200)] + [{"_id": 1}, {"_id": 1.5}, {"_id": "1"}])
    assert db.c.delete_many({"_id": {"$in": [f"k{i}" for i in range(0, 1200, 2)] + ["1"]}}).deleted_count == 601
    assert db.c.count_documents({}) == 602
    assert db.c.find_one({"_id": 1}) is not None and db.c.find_one({"_id": 1.5}) is not None
