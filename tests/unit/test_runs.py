"""The run fold: exact counters under duplicated events, finalisation, the SPEC §3 invariant."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from models import runs
from models.runs import fold, missing_seqs, needs_repair, outcomes_event, requested_event, run_request, snapshot

RUN = "run-1"
COUNTERS = ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs")


def event(kind: str, at: str = "2025-01-06T10:00:00Z", **fields: Any) -> dict[str, Any]:
    return {"type": kind, "runId": RUN, "at": at, **fields}


def outcomes(*items: tuple[int, str], at: str = "2025-01-06T10:00:05Z") -> dict[str, Any]:
    return event("outcomes", at, items=[{"seq": s, "outcome": o} for s, o in items], batch=True)


def apply(*events: dict[str, Any], kept: int = 10) -> dict[str, Any]:
    state: dict[str, Any] | None = None
    for e in events:
        state = fold(state, e, kept)
    assert state is not None
    return state


def invariant(run: dict[str, Any]) -> bool:
    return bool(run["totalFetched"] == sum(run[c] for c in COUNTERS))


def test_run_request_and_requested_event_describe_a_pending_run() -> None:
    command = run_request("https://x/feed", "X", "manual", datetime(2025, 1, 6, tzinfo=UTC), run_id="r1")
    assert command == {"runId": "r1", "sourceUrl": "https://x/feed", "sourceName": "X", "trigger": "manual",
                       "requestedAt": "2025-01-06T00:00:00Z"}
    run = apply({**requested_event(command), "runId": RUN})
    assert run["status"] == "pending" and run["sourceUrl"] == "https://x/feed"
    with pytest.raises(ValueError, match="trigger"):
        run_request("https://x", "X", "cron", datetime(2025, 1, 6, tzinfo=UTC))


def test_a_run_completes_when_every_item_is_accounted() -> None:
    run = apply(
        event("started", sourceUrl="https://x/feed", sourceName="X", trigger="cli"),
        event("fetched", totalFetched=4, failures=[], meta={"httpStatus": 200}),
        outcomes((0, "created"), (1, "unchanged")),
    )
    assert run["status"] == "running"
    run = fold(run, outcomes((2, "updated"), (3, "created"), at="2025-01-06T10:00:02.500Z"), 10)
    assert run["status"] == "completed"
    assert [run[c] for c in COUNTERS] == [2, 1, 1, 0]
    assert run["finishedAt"] == "2025-01-06T10:00:02.500Z" and run["durationMs"] == 2500
    assert run["meta"]["batches"] == 2 and invariant(run)


def test_duplicated_progress_is_counted_once() -> None:
    batch = outcomes((0, "created"), (1, "created"))
    run = apply(event("started"), event("fetched", totalFetched=3, failures=[]), batch, batch, batch)
    assert run["newJobs"] == 2 and run["status"] == "running" and run["meta"]["batches"] == 1
    run = fold(run, event("fetched", totalFetched=99, failures=[]), 10)
    assert run["totalFetched"] == 3, "a replayed announcement does not change the total"


def test_compact_outcomes_count_like_listed_ones_and_each_seq_once() -> None:
    compact = outcomes_event(RUN, [{"seq": 4, "outcome": "failed", "key": "k", "reason": "r", "stage": "write"}],
                             "2025-01-06T10:00:05Z", batch=True, seqs={"created": [0, 1], "updated": [2], "unchanged": []})
    assert compact["seqs"] == {"created": [0, 1], "updated": [2]}, "empty lists are left out"
    run = apply(event("started"), event("fetched", totalFetched=6, failures=[]), compact, compact,
                outcomes((1, "created"), (3, "unchanged")))
    assert [run[c] for c in COUNTERS] == [2, 1, 1, 1] and run["status"] == "running"
    assert run["failures"] == [{"key": "k", "reason": "r", "stage": "write", "seq": 4}]
    run = fold(run, outcomes_event(RUN, [], "2025-01-06T10:00:06Z", seqs={"unchanged": [5, 3]}), 10)
    assert [run[c] for c in COUNTERS] == [2, 1, 2, 1] and run["status"] == "partial" and invariant(run)
    with pytest.raises(ValueError, match="unknown outcome"):
        fold(None, outcomes_event(RUN, [], "2025-01-06T10:00:06Z", seqs={"lost": [0]}), 10)


def test_outcomes_before_the_announcement_are_kept() -> None:
    run = apply(outcomes((1, "created")), event("started"), event("fetched", totalFetched=2, failures=[]), outcomes((0, "unchanged")))
    assert run["status"] == "completed" and run["newJobs"] == 1 and run["unchangedJobs"] == 1


def test_item_failures_make_a_partial_run_and_are_capped() -> None:
    failures = [{"seq": i, "key": f"item[{i}]", "reason": "missing guid and link", "stage": "normalise"} for i in range(5)]
    run = apply(event("started"), event("fetched", totalFetched=6, failures=failures), outcomes((5, "created")), kept=3)
    assert run["status"] == "partial"
    assert run["failedJobs"] == 5 and len(run["failures"]) == 3 and run["failuresTruncated"] is True
    assert snapshot(run)["failures"][0] == {"key": "item[0]", "reason": "missing guid and link", "stage": "normalise"}
    assert invariant(run)


def test_feed_level_failure_is_failed_with_zero_counts() -> None:
    run = apply(event("started"), event("failed", at="2025-01-06T10:00:01Z", error="XML parse error: no element found"))
    assert run["status"] == "failed" and run["error"].startswith("XML parse error")
    assert [run[c] for c in COUNTERS] == [0, 0, 0, 0] and invariant(run)


def test_not_modified_is_completed_with_zero_counts() -> None:
    run = apply(event("started"), event("fetched", totalFetched=0, failures=[], meta={"notModified": True, "httpStatus": 304}))
    assert run["status"] == "completed" and run["meta"]["notModified"] is True and invariant(run)


def test_timeout_counts_the_missing_items_as_failed_and_keeps_the_invariant() -> None:
    run = apply(event("started"), event("fetched", totalFetched=10, failures=[]), outcomes((0, "created"), (1, "created")),
                event("timeout", at="2025-01-06T10:15:00Z", afterSeconds=900))
    assert run["status"] == "failed" and run["failedJobs"] == 8 and invariant(run)
    assert "2 of 10" in run["error"]


def test_finished_runs_ignore_late_events() -> None:
    run = apply(event("started"), event("failed", error="boom"))
    assert fold(run, outcomes((0, "created")), 10) == run


def test_unknown_event_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown progress event"):
        apply(event("bogus"))


def test_snapshot_is_the_import_logs_document() -> None:
    run = apply(event("started", sourceUrl="https://x/feed"), event("fetched", totalFetched=1, failures=[]), outcomes((0, "updated")))
    doc = snapshot(run)
    assert "seen" not in doc and "announced" not in doc
    assert doc["fileName"] == "https://x/feed" and doc["totalImported"] == 1


def test_missing_seqs_lists_items_without_outcome() -> None:
    run = apply(event("started"), event("fetched", totalFetched=12, failures=[{"seq": 3, "key": "k", "reason": "r"}]),
                outcomes((0, "created"), (1, "created"), (9, "unchanged")))
    assert missing_seqs(run, 100) == [2, 4, 5, 6, 7, 8, 10, 11]
    assert missing_seqs(run, 3) == [2, 4, 5]


def test_only_a_silent_announced_running_run_needs_repair() -> None:
    started = apply(event("started", at="2025-01-06T10:00:00Z"))
    announced = fold(started, event("fetched", at="2025-01-06T10:00:01Z", totalFetched=2, failures=[]), 10)
    later = datetime(2025, 1, 6, 10, 0, 31, tzinfo=UTC)
    assert not needs_repair(started, later, 30), "not announced: the poller may still be fetching"
    assert needs_repair(announced, later, 30)
    assert not needs_repair(announced, later, 60)
    done = fold(announced, outcomes((0, "created"), (1, "created")), 10)
    assert not needs_repair(done, later, 1)


def test_a_big_runs_state_stays_small_and_a_state_written_before_compression_still_folds() -> None:
    """Bitmaps are stored compressed: the state goes to the runs changelog at every fold."""
    total = 1_000_000
    started = event("started", sourceUrl="https://x/feed", sourceName="X", trigger="cli")
    unchanged = [outcomes_event(RUN, [], "2025-01-06T10:00:06Z", seqs={"unchanged": list(range(start, min(start + 1000, total - 4)))})
                 for start in range(0, total - 4, 1000)]
    run = apply(started, *unchanged)  # before the announcement: a "pre" bitmap per outcome as well
    assert len(orjson.dumps(run)) < 4096, "1,000,000 bits per bitmap, as plain base64 334 KB"
    old = {**run, "seen": base64.b64encode(runs._bits(run["seen"])).decode(),
           "pre": {k: base64.b64encode(runs._bits(v)).decode() for k, v in run["pre"].items()}}
    for state in (run, old):
        assert missing_seqs(fold(state, event("fetched", totalFetched=total, failures=[]), 10), 10) == [
            total - 4, total - 3, total - 2, total - 1]
        done = fold(fold(state, event("fetched", totalFetched=total - 2, failures=[]), 10),
                    outcomes((total - 4, "created"), (total - 3, "created")), 10)
        assert done["status"] == "completed" and (done["unchangedJobs"], done["newJobs"]) == (total - 4, 2)


def test_a_replay_run_names_the_run_it_replays_in_its_command_and_meta() -> None:
    command = run_request("https://x/feed", "X", "replay", datetime(2025, 1, 6, tzinfo=UTC), run_id="r2", replay_of="r1")
    assert command["trigger"] == "replay" and command["replayOf"] == "r1"
    run = apply({**requested_event(command), "runId": RUN}, event("started", sourceUrl="https://x/feed", trigger="replay",
                                                                   replayOf="r1"))
    assert run["trigger"] == "replay" and run["meta"]["replayOf"] == "r1"
    assert snapshot(run)["meta"]["replayOf"] == "r1"
    with pytest.raises(ValueError, match="replay"):
        run_request("https://x/feed", "X", "replay", datetime(2025, 1, 6, tzinfo=UTC))
    with pytest.raises(ValueError, match="replay"):
        run_request("https://x/feed", "X", "manual", datetime(2025, 1, 6, tzinfo=UTC), replay_of="r1")
