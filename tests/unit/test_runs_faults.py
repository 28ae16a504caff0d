"""The fold under faults (issue 9): out-of-range sequence numbers, runs ending early, hostile failure text,
runs the table lost. Every finished state must keep totalFetched == new + updated + unchanged + failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from models.runs import (
    MAX_FAILURE_TEXT,
    clip,
    compact_failures,
    fold,
    reconcile_event,
    snapshot,
    timeout_event,
)

RUN = "run-f"
COUNTERS = ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs")
T0 = "2025-01-06T10:00:00Z"


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "runId": RUN, "at": fields.pop("at", T0), **fields}


def out(*items: tuple[int, str]) -> dict[str, Any]:
    return ev("outcomes", items=[{"seq": s, "outcome": o} for s, o in items], batch=True)


def fetched(total: int, failures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return ev("fetched", totalFetched=total, failures=failures or [])


def apply(*events: dict[str, Any], kept: int = 10, state: dict[str, Any] | None = None) -> dict[str, Any]:
    for e in events:
        state = fold(state, e, kept)
    assert state is not None
    return state


def counts(run: dict[str, Any]) -> tuple[int, ...]:
    return (run["totalFetched"], *(run[c] for c in COUNTERS))


STARTED = ev("started", sourceUrl="https://x/feed", sourceName="X", trigger="cli", requestedAt=T0)


@pytest.mark.parametrize(
    ("events", "status", "expected"),
    [
        # seen in issue 9: "completed, 2 fetched, 3 counted" — seq 2 does not exist in a 2-item feed
        ([STARTED, fetched(2), out((0, "created"), (1, "created"), (2, "created"))], "completed", (2, 2, 0, 0, 0)),
        # the same, with the outcomes counted before the announcement: taken back at the announcement
        ([STARTED, out((0, "created"), (2, "updated"), (5, "unchanged")), fetched(2), out((1, "unchanged"))],
         "completed", (2, 1, 0, 1, 0)),
        # an announced failure beyond the total is ignored too
        ([STARTED, fetched(1, [{"seq": 3, "key": "k", "reason": "r", "stage": "s"}]), out((0, "created"))],
         "completed", (1, 1, 0, 0, 0)),
        # seen in issue 9: "failed, totalFetched 3, sum 1" — a run failing after its announcement
        ([STARTED, fetched(3), out((0, "created")), ev("failed", error="internal error")], "failed", (3, 1, 0, 0, 2)),
        # failing before the announcement, after some outcomes: the items with an outcome are the total
        ([STARTED, out((0, "created"), (4, "unchanged")), ev("failed", error="parse error")], "failed", (2, 1, 0, 1, 0)),
        # a timeout before the announcement, likewise
        ([STARTED, out((7, "created")), ev("timeout", afterSeconds=900)], "failed", (1, 1, 0, 0, 0)),
        # negative sequence numbers are never an item
        ([STARTED, fetched(1), out((-1, "created"), (0, "unchanged"))], "completed", (1, 0, 0, 1, 0)),
    ],
)
def test_counts_keep_the_invariant(events: list[dict[str, Any]], status: str, expected: tuple[int, ...]) -> None:
    run = apply(*events)
    assert run["status"] == status, run
    assert counts(run) == expected
    assert run["totalFetched"] == sum(run[c] for c in COUNTERS)
    assert "pre" not in run, "the per-outcome bitmaps are dropped once the total is known"


def test_failures_beyond_the_total_are_unlisted_at_the_announcement() -> None:
    early = ev("outcomes", items=[{"seq": 9, "outcome": "failed", "key": "gone", "reason": "r", "stage": "s"}])
    run = apply(STARTED, early, fetched(1), out((0, "created")))
    assert (run["status"], run["failedJobs"], run["failures"]) == ("completed", 0, [])


def test_failure_text_is_clipped_in_the_state_and_the_snapshot() -> None:
    long_key, long_reason = "k" * 10_000, "r" * 50_000
    run = apply(STARTED, fetched(1, [{"seq": 0, "key": long_key, "reason": long_reason, "stage": "s" * 999}]))
    [failure] = snapshot(run)["failures"]
    assert failure["key"] == clip(long_key) and len(failure["key"]) == MAX_FAILURE_TEXT
    assert len(failure["reason"]) == MAX_FAILURE_TEXT and len(failure["stage"]) == MAX_FAILURE_TEXT
    assert run["status"] == "partial"
    failed = apply(STARTED, ev("failed", error="e" * 100_000))
    assert len(failed["error"]) <= 1024


def test_compact_failures_lists_at_most_kept_and_the_fold_counts_the_rest() -> None:
    raw = [{"seq": i, "key": "k" * 1000, "reason": "missing guid and link", "stage": "normalise"} for i in range(20_000)]
    items = compact_failures(raw, 100)
    assert len([i for i in items if "reason" in i]) == 100 and all(len(i.get("key", "")) <= MAX_FAILURE_TEXT for i in items)
    assert len(repr(items)) < 1_000_000, "an event about 20,000 failures stays far below the broker's 1 MiB default"
    run = apply(STARTED, fetched(20_001), ev("outcomes", items=items), out((20_000, "created")), kept=100)
    assert (run["status"], run["failedJobs"], len(run["failures"]), run["failuresTruncated"]) == ("partial", 20_000, 100, True)


def test_reconcile_changes_nothing_not_even_the_last_progress_time() -> None:
    run = apply(STARTED, fetched(2), out((0, "created")))
    assert fold(run, reconcile_event({"runId": RUN}, "2025-01-06T11:00:00Z"), 10) == run


def test_timeout_of_a_finished_run_changes_nothing() -> None:
    run = apply(STARTED, fetched(1), out((0, "created")))
    row = {"runId": RUN, "status": "running", "totalFetched": 1, "newJobs": 0}
    assert fold(run, timeout_event(row, "2025-01-06T11:00:00Z", 900), 10) == run


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # announced with 2 of 5 accounted when the table lost it: the other 3 are failed
        ({"totalFetched": 5, "newJobs": 1, "unchangedJobs": 1, "failedJobs": 0, "status": "running"}, (5, 1, 0, 1, 3)),
        # never announced: nothing known to exist
        ({"totalFetched": 0, "newJobs": 0, "status": "pending"}, (0, 0, 0, 0, 0)),
    ],
)
def test_timeout_of_a_run_the_table_does_not_know_finalises_it_from_its_row(row: dict[str, Any], expected: tuple[int, ...]) -> None:
    stored = {"runId": RUN, "sourceUrl": "https://x/feed", "sourceName": "X", "trigger": "schedule",
              "requestedAt": datetime(2025, 1, 6, 9, tzinfo=UTC), "startedAt": None, "failures": [], **row}
    run = fold(None, timeout_event(stored, "2025-01-06T10:00:00Z", 900), 10)
    assert run["status"] == "failed" and counts(run) == expected
    assert run["sourceUrl"] == "https://x/feed" and run["requestedAt"] == "2025-01-06T09:00:00Z"
    assert "did not know the run" in run["error"] and run["durationMs"] == 3_600_000
    assert "restored" not in snapshot(run)
