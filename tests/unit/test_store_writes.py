"""The store's write path, pure parts: how lists are cut into commands and write errors mapped back."""

from __future__ import annotations

import pytest
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from streams.store import chunked, remap_errors, unreachable, upsert_operation


def test_chunks_cover_every_item_once_in_order_and_none_exceeds_the_size() -> None:
    items = list(range(120))
    pieces = chunked(items, 50)
    assert [(offset, len(chunk)) for offset, chunk in pieces] == [(0, 50), (50, 50), (100, 20)]
    assert [item for _, chunk in pieces for item in chunk] == items
    assert all(chunk[0] == offset for offset, chunk in pieces), "the offset is where the chunk starts"


def test_an_exact_multiple_and_an_empty_list_make_no_empty_command() -> None:
    assert [len(chunk) for _, chunk in chunked(list(range(100)), 50)] == [50, 50]
    assert chunked([], 50) == []


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk size"):
        chunked([1], 0)


def test_write_error_index_points_into_the_whole_list() -> None:
    items = [f"k{i}" for i in range(120)]
    offset, chunk = chunked(items, 50)[2]
    errors = [{"index": 3, "code": 11000, "errmsg": "dup"}, {"index": 19, "code": 2, "errmsg": "bad"}]
    remapped = remap_errors(errors, offset)
    assert [items[error["index"]] for error in remapped] == [chunk[3], chunk[19]] == ["k103", "k119"]
    assert [(error["code"], error["errmsg"]) for error in remapped] == [(11000, "dup"), (2, "bad")]
    assert errors[0]["index"] == 3, "the chunk's own errors are not modified"


def test_update_operators_make_an_update_and_a_plain_document_a_replacement() -> None:
    update = upsert_operation({"_id": "a"}, {"$set": {"x": 1}})
    replacement = upsert_operation({"_id": "a"}, {"_id": "a", "x": 1})
    assert isinstance(update, UpdateOne) and update._upsert
    assert isinstance(replacement, ReplaceOne) and replacement._upsert


def test_connection_failures_and_deadlines_count_as_unreachable() -> None:
    assert unreachable(NetworkTimeout("timed out"))
    assert unreachable(ServerSelectionTimeoutError("no server"))
    assert unreachable(ExecutionTimeout("operation exceeded time limit", 50))
    timed_out_bulk = {"writeErrors": [{"index": 0, "code": 50, "errmsg": "exceeded"}, {"index": 1, "code": 11000, "errmsg": "dup"}]}
    assert unreachable(BulkWriteError(timed_out_bulk))


def test_an_answer_from_the_store_is_not_unreachable() -> None:
    assert not unreachable(DuplicateKeyError("dup", 11000))
    assert not unreachable(OperationFailure("bad query", 2))
    assert not unreachable(BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}]}))
    assert not unreachable(KeyError("index"))
