"""agents.scheduler: which feeds are due, what each unfinished run is sent, and when the timers look again.

The decisions are pure functions tested by table; the Scheduler runs on a fake store, a fake
monotonic clock and a fixed wall clock, and records what it would send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from agents.scheduler import (
    FIRST_RUN_DELAY_SECONDS,
    TICK_SECONDS,
    Schedule,
    Scheduler,
    plan_schedule,
    reconcile_event_for,
    reconcile_interval,
)
from models.registry import FeedEntry
from streams.settings import Settings

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
HOUR = 3600.0
A, B, C = "https://a.example/feed", "https://b.example/feed", "https://c.example/feed"


def feed(url: str, name: str = "", enabled: bool = True) -> dict[str, Any]:
    return {"url": url, "name": name, "enabled": enabled, "createdAt": NOW}


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(("feeds", "busy", "last", "expected"), [
    pytest.param([feed(A, "A")], set(), {}, Schedule([FeedEntry(A, "A")], 0, 0), id="never scheduled: due"),
    pytest.param([feed(A)], set(), {A: ago(HOUR)}, Schedule([FeedEntry(A, "")], 0, 0), id="scheduled one interval ago: due"),
    pytest.param([feed(A)], set(), {A: ago(HOUR - TICK_SECONDS / 2)}, Schedule([FeedEntry(A, "")], 0, 0),
                 id="less than a tick short of the interval: due now, not a tick later"),
    pytest.param([feed(A)], set(), {A: ago(HOUR - TICK_SECONDS)}, Schedule([], 0, 1), id="one tick short of the interval: waits"),
    pytest.param([feed(A)], set(), {A: ago(HOUR / 2)}, Schedule([], 0, 1), id="scheduled half an interval ago: waits"),
    pytest.param([feed(A)], {A}, {}, Schedule([], 1, 0), id="run in progress: not started again"),
    pytest.param([feed(A)], {A}, {A: ago(60)}, Schedule([], 1, 0), id="in progress and recent: counted as in progress"),
    pytest.param([feed(A, enabled=False)], set(), {}, Schedule([], 0, 0), id="disabled: never due"),
    pytest.param([{"name": "no url", "enabled": True}, {"url": 7, "enabled": True}], set(), {}, Schedule([], 0, 0),
                 id="a registry entry without a usable url is skipped"),
    pytest.param([feed(A, "A"), feed(B, "B", enabled=False), feed(C, "C")], {C}, {A: ago(HOUR * 2)},
                 Schedule([FeedEntry(A, "A")], 1, 0), id="mixed"),
    pytest.param([feed(C, "C"), feed(A, "A")], set(), {}, Schedule([FeedEntry(C, "C"), FeedEntry(A, "A")], 0, 0),
                 id="the registry's order is kept"),
])
def test_what_is_due(feeds: list[dict[str, Any]], busy: set[str], last: dict[str, datetime], expected: Schedule) -> None:
    assert plan_schedule(feeds, busy, last, NOW, HOUR) == expected


def test_a_longer_interval_keeps_a_feed_waiting_that_a_shorter_one_runs() -> None:
    last = {A: ago(2 * HOUR)}
    assert plan_schedule([feed(A)], set(), last, NOW, 3 * HOUR).due == []
    assert plan_schedule([feed(A)], set(), last, NOW, HOUR).due == [FeedEntry(A, "")]


def row(**fields: Any) -> dict[str, Any]:
    return {"_id": "r1", "runId": "r1", "status": "running", "sourceUrl": A, "sourceName": "A", "trigger": "schedule", **fields}


TIMEOUT = 900.0


@pytest.mark.parametrize(("unfinished", "kind"), [
    pytest.param(row(requestedAt=ago(60), startedAt=ago(50)), "reconcile", id="started recently"),
    pytest.param(row(requestedAt=ago(60), status="pending"), "reconcile", id="requested recently, not started"),
    pytest.param(row(requestedAt=ago(2 * TIMEOUT), startedAt=ago(60)), "reconcile", id="started recently after a long wait"),
    pytest.param(row(requestedAt=ago(2 * TIMEOUT), startedAt=ago(TIMEOUT + 1)), "timeout", id="started before the timeout"),
    pytest.param(row(requestedAt=ago(TIMEOUT + 1), status="pending"), "timeout", id="pending past the timeout"),
    pytest.param(row(), "timeout", id="no begin time at all"),
    pytest.param(row(requestedAt="2025-01-06T11:59:00Z"), "timeout", id="a begin time that is not a datetime"),
])
def test_each_unfinished_row_is_reconciled_or_timed_out(unfinished: dict[str, Any], kind: str) -> None:
    decision = reconcile_event_for(unfinished, NOW, TIMEOUT)
    assert decision is not None
    event, past_timeout = decision
    assert (event["type"], event["runId"], event["at"], past_timeout) == (kind, "r1", "2025-01-06T12:00:00Z", kind == "timeout")
    if kind == "timeout":
        assert event["afterSeconds"] == TIMEOUT
        assert event["row"]["sourceUrl"] == A  # the run can be rebuilt from the row if the table lost it


def test_a_row_without_a_run_id_gets_no_event() -> None:
    assert reconcile_event_for({"_id": "x", "status": "running", "requestedAt": ago(TIMEOUT * 2)}, NOW, TIMEOUT) is None


@pytest.mark.parametrize(("timeout", "interval"), [(900.0, 60.0), (120.0, 30.0), (10.0, TICK_SECONDS)])
def test_reconciliation_runs_within_a_quarter_of_the_timeout_at_most_once_a_minute(timeout: float, interval: float) -> None:
    assert reconcile_interval(timeout) == interval


# --- the Scheduler on fakes ----------------------------------------------------------------------


class Cursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self.rows:
            yield doc


class ImportLogs:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[dict[str, Any]] = []

    def find(self, query: dict[str, Any], _projection: dict[str, Any]) -> Cursor:
        self.queries.append(query)
        return Cursor(self.rows)


class FakeStore:
    def __init__(self, feeds: list[dict[str, Any]], busy: Collection[str] = (), last: dict[str, datetime] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> None:
        self.feeds, self.busy, self.last = feeds, set(busy), last or {}
        self.import_logs = ImportLogs(rows or [])
        self.since: list[datetime] = []
        self.down = False

    async def enabled_feeds(self) -> list[dict[str, Any]]:
        if self.down:
            raise ConnectionError("store away")
        return [doc for doc in self.feeds if doc["enabled"]]

    async def active_sources(self) -> set[str]:
        return self.busy

    async def last_scheduled(self, since: datetime) -> dict[str, datetime]:
        self.since.append(since)
        return {url: at for url, at in self.last.items() if at >= since}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, topic: str, key: str, value: dict[str, Any]) -> None:
        self.messages.append((topic, key, value))

    def of(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        return [(key, value) for name, key, value in self.messages if name == f"jobstream.{topic}"]


def scheduler(store: FakeStore, *, on_start: bool = True, interval_minutes: float = 60.0) -> tuple[Scheduler, Clock, Sent]:
    clock, sent = Clock(), Sent()
    settings = Settings(import_interval_minutes=interval_minutes, import_on_start=on_start, run_timeout_seconds=TIMEOUT)
    return Scheduler(cast(Any, store), settings, sent, clock=clock, now=lambda: NOW), clock, sent


async def test_the_first_schedule_comes_shortly_after_start_then_once_an_interval() -> None:
    store = FakeStore([feed(A, "A")])
    step, clock, sent = scheduler(store)
    await step.schedule_imports()
    assert sent.messages == [] and store.since == [], "too early: the store is not even read"
    clock.now += FIRST_RUN_DELAY_SECONDS
    await step.schedule_imports()
    assert [key for key, _ in sent.of("commands")] == [A]
    (_, requested), = sent.of("import.progress")
    assert (requested["type"], requested["trigger"], requested["sourceName"]) == ("requested", "schedule", "A")
    assert store.since == [NOW - timedelta(seconds=HOUR - TICK_SECONDS)]
    clock.now += HOUR - 1
    await step.schedule_imports()
    assert len(sent.of("commands")) == 1, "the next look is one interval later"


async def test_without_import_on_start_the_first_schedule_waits_an_interval() -> None:
    step, clock, sent = scheduler(FakeStore([feed(A)]), on_start=False, interval_minutes=10)
    clock.now += FIRST_RUN_DELAY_SECONDS
    await step.schedule_imports()
    assert sent.messages == []
    clock.now += 600
    await step.schedule_imports()
    assert len(sent.of("commands")) == 1


async def test_a_new_leader_does_not_repeat_what_the_last_one_scheduled() -> None:
    """A fresh process looks at once, but the store says the feed was scheduled a minute ago."""
    store = FakeStore([feed(A), feed(B)], last={A: ago(60)})
    step, clock, sent = scheduler(store)
    clock.now += FIRST_RUN_DELAY_SECONDS
    await step.schedule_imports()
    assert [key for key, _ in sent.of("commands")] == [B]


async def test_a_store_outage_postpones_the_schedule_by_one_tick_only() -> None:
    store = FakeStore([feed(A)])
    step, clock, sent = scheduler(store)
    clock.now += FIRST_RUN_DELAY_SECONDS
    store.down = True
    with pytest.raises(ConnectionError):
        await step.schedule_imports()
    store.down = False
    clock.now += TICK_SECONDS
    await step.schedule_imports()
    assert len(sent.of("commands")) == 1


async def test_reconciliation_sends_one_event_per_unfinished_row_keyed_by_run_then_waits_its_interval() -> None:
    rows = [row(runId="r1", requestedAt=ago(60)), row(runId="r2", requestedAt=ago(TIMEOUT * 2)), {"_id": "broken", "status": "running"}]
    store = FakeStore([], rows=rows)
    step, clock, sent = scheduler(store)
    await step.reconcile_runs()
    assert [(key, value["type"]) for key, value in sent.of("import.progress")] == [("r1", "reconcile"), ("r2", "timeout")]
    assert store.import_logs.queries == [{"status": {"$in": ["pending", "running"]}}]
    clock.now += reconcile_interval(TIMEOUT) - 1
    await step.reconcile_runs()
    assert len(sent.messages) == 2, "not again before its interval"
    clock.now += 1
    await step.reconcile_runs()
    assert len(sent.messages) == 4
