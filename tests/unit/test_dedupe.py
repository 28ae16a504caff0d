"""classify(): created / updated / unchanged, table writes only on change, and redeliveries keep their first outcome."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from agents.dedupe import Dedupe
from models.dedupe import RECENT_KEPT, Classification, classify, forget_rejected, rejected_event
from models.envelopes import ITEM_OVERHEAD, murmur2, pack, partition_of, postings_envelope
from models.feed import dedupe_key
from streams.app import create_pipeline
from streams.faust_internals import set_current_event
from streams.settings import Settings


def written(result: Classification) -> dict[str, Any]:
    assert result.state is not None, f"{result.outcome} must write the table"
    return result.state


def test_first_sight_is_created_version_1() -> None:
    result = classify(None, "fp1", "run-1", 0, (10, 0))
    assert (result.outcome, result.version, result.replayed) == ("created", 1, False)
    state = written(result)
    assert (state["fingerprint"], state["version"], state["pos"]) == ("fp1", 1, [10, 0])


@pytest.mark.parametrize(
    ("fingerprint", "outcome", "version", "writes"),
    [("fp1", "unchanged", 3, False), ("fp2", "updated", 4, True)],
)
def test_known_key_is_unchanged_or_updated_and_only_a_change_is_written(
    fingerprint: str, outcome: str, version: int, writes: bool
) -> None:
    previous = {"fingerprint": "fp1", "version": 3, "recent": [["run-0", 5, "updated", 3]], "pos": [4, 2]}
    result = classify(previous, fingerprint, "run-1", 7, (9, 0))
    assert (result.outcome, result.version, result.replayed) == (outcome, version, False)
    assert (result.state is not None) == writes
    if writes:
        assert written(result)["recent"][0] == ["run-1", 7, outcome, version] and written(result)["pos"] == [9, 0]


def test_redelivered_change_gets_its_original_outcome_and_writes_nothing() -> None:
    created = written(classify(None, "fp1", "run-1", 4, (3, 4)))
    replay = classify(created, "fp1", "run-1", 4, (3, 4))
    assert (replay.outcome, replay.version, replay.replayed, replay.state) == ("created", 1, True, None)
    update = written(classify(created, "fp2", "run-2", 0, (8, 0)))
    assert classify(update, "fp2", "run-2", 0, (8, 0)).outcome == "updated"


def test_redelivered_unchanged_posting_before_a_later_change_stays_unchanged() -> None:
    # run-1 saw fp1 unchanged at offset 5 (no write); run-2 then changed the key at offset 9.
    state = {"fingerprint": "fp1", "version": 1, "recent": [["run-0", 0, "created", 1]], "pos": [2, 0]}
    assert classify(state, "fp1", "run-1", 0, (5, 0)).state is None
    state = written(classify(state, "fp2", "run-2", 0, (9, 0)))
    # A crash makes both envelopes come again, in order: each keeps its first outcome.
    again = classify(state, "fp1", "run-1", 0, (5, 0))
    assert (again.outcome, again.replayed, again.state) == ("unchanged", True, None)
    assert classify(state, "fp2", "run-2", 0, (9, 0)).outcome == "updated"


def test_same_item_twice_in_one_envelope_is_not_a_replay() -> None:
    first = written(classify(None, "fp1", "run-1", 0, (7, 0)))
    second = classify(first, "fp1", "run-1", 9, (7, 5))
    assert (second.outcome, second.replayed) == ("unchanged", False)


def test_memory_of_recent_changes_is_bounded() -> None:
    state = written(classify(None, "fp0", "run-0", 0, (0, 0)))
    for i in range(1, RECENT_KEPT * 3):
        state = written(classify(state, f"fp{i}", f"run-{i}", 0, (i, 0)))
    assert len(state["recent"]) == RECENT_KEPT and state["version"] == RECENT_KEPT * 3


def test_a_value_written_before_positions_existed_still_works() -> None:
    old = {"fingerprint": "fp1", "version": 2, "recent": [["run-1", 3, "updated", 2]]}
    assert classify(old, "fp1", "run-1", 3, (0, 0)).outcome == "updated", "a recorded change is recognised"
    assert classify(old, "fp1", "run-2", 3, (0, 0)).outcome == "unchanged"


@pytest.mark.parametrize(
    ("previous", "rejected", "version", "expected"),
    [
        (None, "fp1", 1, None),  # the table never knew the key
        ({"fingerprint": "fp2", "version": 2, "recent": []}, "fp1", 1, None),  # a newer fingerprint meanwhile decides
        ({"fingerprint": "fp1", "version": 3, "recent": []}, "fp1", 2, None),  # written again since: a redelivery
        ({"fingerprint": "fp1", "version": 2, "recent": [["r", 0, "updated", 2]]}, "fp1", 2,
         {"fingerprint": None, "version": 2, "recent": [["r", 0, "updated", 2]]}),
    ],
)
def test_forget_rejected(previous: dict[str, Any] | None, rejected: str, version: int, expected: dict[str, Any] | None) -> None:
    assert forget_rejected(previous, rejected, version) == expected


def test_after_a_rejection_the_same_content_is_updated_with_a_higher_version() -> None:
    created = written(classify(None, "fp1", "run-1", 0, (1, 0)))
    forgotten = forget_rejected(created, "fp1", 1)
    assert forgotten is not None
    again = classify(forgotten, "fp1", "run-2", 0, (6, 0))
    assert (again.outcome, again.version) == ("updated", 2), "not unchanged: MongoDB does not hold it"


def test_rejected_event_is_small_and_keyed_by_the_posting() -> None:
    change = {"job": {"dedupeKey": "k1"}, "fingerprint": "fp", "version": 3, "runId": "r", "seq": 7}
    event = rejected_event(change, "x" * 10_000)
    assert event["type"] == "rejected" and event["dedupeKey"] == "k1" and len(event["reason"]) == 256


def test_partition_of_is_kafkas_default_partitioner() -> None:
    # Values of the Java client's Utils.toPositive(Utils.murmur2(key)) % 8 for these keys.
    from aiokafka.partitioner import DefaultPartitioner  # noqa: PLC0415

    keys = [f"{i:040x}" for i in range(200)]
    assert [partition_of(k, 8) for k in keys] == [DefaultPartitioner()(k.encode(), list(range(8)), list(range(8))) for k in keys]


def test_murmur2_matches_kafkas_java_client_and_aiokafka() -> None:
    # Signed values from the Java client's own murmur2 tests (Utils.murmur2).
    java = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
            "a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
            "abc": 479470107}
    assert {key: murmur2(key.encode()) - (1 << 32) * (murmur2(key.encode()) >> 31) for key in java} == java
    from aiokafka.partitioner import murmur2 as reference  # noqa: PLC0415

    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    samples = [bytes(rng.randrange(256) for _ in range(length)) for length in range(70) for _ in range(20)]
    assert [murmur2(data) for data in samples] == [reference(data) & 0xFFFFFFFF for data in samples]


def test_pack_groups_by_partition_keeps_order_and_caps_envelopes() -> None:
    items = [(i % 3, orjson.dumps({"dedupeKey": f"k{i}", "seq": i, "description": "x" * 1000})) for i in range(30)]
    envelopes = pack(items, max_bytes=5 * (len(items[0][1]) + ITEM_OVERHEAD), max_items=4)
    for partition, batch in envelopes:
        assert all(orjson.loads(item)["seq"] % 3 == partition for item in batch) and 1 <= len(batch) <= 4
    for partition in range(3):
        seqs = [orjson.loads(item)["seq"] for p, batch in envelopes if p == partition for item in batch]
        assert seqs == list(range(partition, 30, 3)), "order within a partition is kept"
    assert [len(batch) for _, batch in pack([(0, b"{}")] * 12, max_bytes=10 * (2 + ITEM_OVERHEAD))] == [10, 2], "bytes cap"
    huge = [(0, orjson.dumps({"dedupeKey": "big", "seq": 0, "description": "é" * 10_000}))]
    assert pack(huge, max_bytes=1000) == [(0, [huge[0][1]])], "an item over the cap goes alone"


def test_postings_envelope_is_the_json_of_its_header_and_items() -> None:
    items = [orjson.dumps({"dedupeKey": "k1", "seq": 0, "title": "é \u2028 \""}), orjson.dumps({"dedupeKey": "k2", "seq": 1})]
    envelope = postings_envelope("r\"1", "2025-01-06T10:00:00Z", items)
    assert orjson.loads(envelope) == {"type": "postings", "runId": "r\"1", "fetchedAt": "2025-01-06T10:00:00Z",
                                      "items": [orjson.loads(item) for item in items]}
    assert orjson.loads(postings_envelope("r", "t", []))["items"] == []


class FakeTable(dict[str, Any]):
    """A table as the dedupe step uses it: ``data`` reads the store, item assignment writes (and is counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    @property
    def data(self) -> dict[str, Any]:
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_the_dedupe_step_writes_changes_only_and_lists_unchanged_seqs_by_run() -> None:
    table = FakeTable()
    dedupe = Dedupe(cast(Any, table), cast(Any, None), cast(Any, None))

    def envelope(run_id: str, fingerprints: list[str]) -> dict[str, Any]:
        items = [{"dedupeKey": f"k{i}", "fingerprint": fp, "seq": 10 + i, "sourceUrl": "https://x/feed", "title": f"t{i}"}
                 for i, fp in enumerate(fingerprints)]
        return {"runId": run_id, "fetchedAt": "2025-01-06T10:00:00Z", "items": items}

    unchanged: defaultdict[str, list[int]] = defaultdict(list)
    counts: Counter[tuple[str, str]] = Counter()
    first = dedupe.classify_envelope(envelope("r1", ["a", "b", "c"]), 0, unchanged, counts)
    assert [(c["type"], c["version"], c["seq"], c["job"]["title"]) for c in first] == [
        ("created", 1, 10, "t0"), ("created", 1, 11, "t1"), ("created", 1, 12, "t2")]
    assert table.writes == 3 and unchanged["r1"] == [] and not counts
    assert json.loads(table["k1"])["fingerprint"] == "b", "table values are JSON bytes"
    again = dedupe.classify_envelope(envelope("r2", ["a", "B", "c"]), 1, unchanged, counts)
    assert [(c["type"], c["version"], c["job"]["dedupeKey"]) for c in again] == [("updated", 2, "k1")]
    assert table.writes == 4, "an unchanged posting costs no table write"
    assert unchanged["r2"] == [10, 12] and counts == Counter({("https://x/feed", "unchanged"): 2})
    replay = dedupe.classify_envelope(envelope("r2", ["a", "B", "c"]), 1, unchanged, counts)
    assert [(c["type"], c["version"]) for c in replay] == [("updated", 2)], "a redelivered change keeps its outcome"
    assert table.writes == 4 and dedupe.lookup("missing") is None


class PartitionEvent:
    """What a table write needs of the current event: its message's partition (weak-referenceable)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="jobs.parsed", offset=0)
        self.value: dict[str, Any] = {}


def test_the_direct_rocksdb_read_sees_what_faust_wrote_and_reads(tmp_path: Path) -> None:
    """The dedupe step reads a partition's RocksDB itself: same keys and values as Faust's own path."""
    pipeline = create_pipeline(Settings.from_env({"DATA_DIR": str(tmp_path), "TOPIC_PARTITIONS": "8"}))
    dedupe = Dedupe(pipeline.dedupe_table, pipeline.topics, pipeline.settings)
    keys = [dedupe_key("https://x/feed", f"job-{i}") for i in range(40)] + ["k-\u00e9\"\\"]
    events = {partition: PartitionEvent(partition) for partition in range(8)}
    for i, key in enumerate(keys):
        set_current_event(events[partition_of(key, 8)])
        dedupe.remember(key, {"fingerprint": f"fp{i}", "version": i})
    for i, key in enumerate(keys):
        read = dedupe.reader(partition_of(key, 8))
        assert read is not dedupe.lookup, "a RocksDB table is read directly"
        set_current_event(events[partition_of(key, 8)])
        assert read(key) == dedupe.lookup(key) == {"fingerprint": f"fp{i}", "version": i}
    other = (partition_of(keys[0], 8) + 1) % 8
    assert dedupe.reader(other)(keys[0]) is None, "another partition's database does not hold the key"
    assert dedupe.reader(0)("missing") is None


# --- no rollback: content of an older payload never replaces a version a newer payload made ----------------

T1 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
T2 = datetime(2025, 1, 7, 10, 0, 0, 500000, tzinfo=UTC)  # with microseconds: compared as times, not as text


@pytest.mark.parametrize(
    ("seen_at", "fingerprint", "outcome", "version", "superseded"),
    [
        (T1, "fpA", "unchanged", 2, True),  # older payload, other content: the newer version stays
        (T1, "fpB", "unchanged", 2, False),  # older payload, same content
        (T2, "fpC", "updated", 3, False),  # the same payload read again (a parser or mapping fix) applies
        (T2 + timedelta(days=1), "fpC", "updated", 3, False),  # a newer payload applies
        (None, "fpA", "updated", 3, False),  # no time known: as before
    ],
)
def test_a_posting_of_an_older_payload_never_rolls_a_newer_version_back(
    seen_at: datetime | None, fingerprint: str, outcome: str, version: int, superseded: bool
) -> None:
    created = written(classify(None, "fpA", "run-a", 0, (1, 0), T1))
    newer = written(classify(created, "fpB", "run-b", 0, (5, 0), T2))
    assert newer["at"] == "2025-01-07T10:00:00.500000Z"
    result = classify(newer, fingerprint, "replay-1", 0, (9, 0), seen_at)
    assert (result.outcome, result.version, result.superseded) == (outcome, version, superseded)
    assert (result.state is not None) == (outcome == "updated")


def test_a_value_without_a_time_takes_any_change_and_keeps_its_time_once_given() -> None:
    legacy = {"fingerprint": "fp1", "version": 4, "recent": [], "pos": [3, 0]}
    result = classify(legacy, "fp2", "replay-1", 0, (9, 0), T1)
    assert (result.outcome, result.version) == ("updated", 5)
    assert written(result)["at"] == "2025-01-06T10:00:00Z"
    untimed = written(classify(written(result), "fp3", "run-x", 0, (10, 0), None))
    assert untimed["at"] == "2025-01-06T10:00:00Z", "a change without a time keeps the last known one"


def test_a_replay_envelope_is_classified_with_its_payloads_fetch_time() -> None:
    dedupe = Dedupe(cast(Any, {}), cast(Any, None), Settings.from_env({}))
    table: dict[str, bytes] = {}
    dedupe.lookup = lambda key: orjson.loads(table[key]) if key in table else None  # type: ignore[method-assign]
    dedupe.reader = lambda _partition: dedupe.lookup  # type: ignore[method-assign]
    dedupe.remember = lambda key, state: table.__setitem__(key, orjson.dumps(state))  # type: ignore[method-assign]
    item = {"dedupeKey": "k1", "sourceUrl": "https://x/feed", "seq": 0, "fingerprint": "new"}
    table["k1"] = orjson.dumps({"fingerprint": "newest", "version": 2, "recent": [], "pos": [1, 0], "at": "2025-01-07T10:00:00Z"})
    unchanged: dict[str, list[int]] = defaultdict(list)
    envelope = cast(Any, {"type": "postings", "runId": "replay-1", "fetchedAt": "2025-01-08T10:00:00Z",
                          "sourceAt": "2025-01-06T10:00:00Z", "items": [item]})
    assert dedupe.classify_envelope(envelope, 7, unchanged, Counter()) == []
    assert unchanged["replay-1"] == [0]
    envelope = cast(Any, {**envelope, "runId": "run-2"})
    del envelope["sourceAt"]  # a fresh fetch: fetchedAt is the payload's time
    [change] = dedupe.classify_envelope(envelope, 8, unchanged, Counter())
    assert (change["type"], change["version"]) == ("updated", 3)


def test_an_envelope_names_its_payloads_fetch_time_only_when_it_differs() -> None:
    assert "sourceAt" not in orjson.loads(postings_envelope("r", "2025-01-06T10:00:00Z", [b"{}"], "2025-01-06T10:00:00Z"))
    replay = orjson.loads(postings_envelope("r", "2025-01-08T10:00:00Z", [b"{}"], "2025-01-06T10:00:00Z"))
    assert replay["sourceAt"] == "2025-01-06T10:00:00Z" and replay["items"] == [{}]
