"""Leader-only timers: scheduled runs, reconciliation of unfinished runs (and their timeouts), raw payload retention, the runs gauge.

Faust elects one leader among the workers; ``on_leader`` timers run there only, so several
workers never multiply scheduled runs. A timer whose store call fails to connect or passes its
deadline tries again at its next tick instead of crashing the worker.

What is due and what an unfinished run needs are pure functions (:func:`plan_schedule`,
:func:`reconcile_event_for`); :class:`Scheduler` reads the store, calls them and sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial, wraps
from typing import Any

from pymongo.errors import PyMongoError

from agents import metrics
from models.registry import FeedEntry, entry_of
from models.runs import ROW_FIELDS, iso, reconcile_event, timeout_event, utc_now
from streams.app import Pipeline
from streams.commands import Send, request_runs
from streams.settings import Settings
from streams.store import Store, unreachable

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0
FIRST_RUN_DELAY_SECONDS = 5.0
RECONCILE_MAX_SECONDS = 60.0
UNFINISHED = {"status": {"$in": ["pending", "running"]}}


def reconcile_interval(run_timeout_seconds: float) -> float:
    """Often enough that a run is finalised within a quarter of its timeout after it, at most once a minute."""
    return min(RECONCILE_MAX_SECONDS, max(TICK_SECONDS, run_timeout_seconds / 4))


def schedule_window_start(now: datetime, interval_seconds: float) -> datetime:
    """Scheduled runs requested since this moment make their feed not due yet.

    One tick less than the interval, so a run requested a moment after this process's tick does not
    push its feed back a whole tick.
    """
    return now - timedelta(seconds=interval_seconds - TICK_SECONDS)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One tick's decision: the feeds to run now, and why the others wait."""

    due: list[FeedEntry]
    in_progress: int
    scheduled_recently: int


def plan_schedule(
    feeds: Iterable[Mapping[str, Any]],
    busy: Collection[str],
    last_scheduled: Mapping[str, datetime],
    now: datetime,
    interval_seconds: float,
) -> Schedule:
    """The enabled feeds with no run pending or running and no scheduled run within the last interval.

    ``busy`` holds the feeds with a run in progress, ``last_scheduled`` each feed's latest scheduled
    request (manual runs do not count: they do not move the schedule).
    """
    window_start = schedule_window_start(now, interval_seconds)
    due: list[FeedEntry] = []
    in_progress = recently = 0
    for doc in feeds:
        url = doc.get("url")
        if not doc.get("enabled") or not isinstance(url, str):
            continue
        if url in busy:
            in_progress += 1
        elif (last := last_scheduled.get(url)) is not None and last >= window_start:
            recently += 1
        else:
            due.append(entry_of(doc))
    return Schedule(due, in_progress, recently)


def reconcile_event_for(row: Mapping[str, Any], now: datetime, run_timeout_seconds: float) -> tuple[dict[str, Any], bool] | None:
    """The ``import.progress`` event for one unfinished ``import_logs`` row, and whether it is past its timeout.

    A row begun (started, else requested) before RUN_TIMEOUT_SECONDS ago, or with no usable begin time,
    gets a ``timeout``: the run is finalised as failed, rebuilt from the row if the table lost it. Any
    other gets a ``reconcile``, which re-projects the run's state from the table. None for a row
    without a runId: no event could reach its run.
    """
    if not isinstance(row.get("runId"), str):
        return None
    at = iso(now)
    begun = row.get("startedAt") or row.get("requestedAt")
    if not isinstance(begun, datetime) or begun < now - timedelta(seconds=run_timeout_seconds):
        return timeout_event(row, at, run_timeout_seconds), True
    return reconcile_event(row, at), False


def skip_while_unreachable(timer: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The timer again at its next tick when MongoDB is away: an exception in a Faust timer stops the worker."""

    @wraps(timer)
    async def run() -> None:
        try:
            await timer()
        except PyMongoError as exc:
            if not unreachable(exc):
                raise
            logger.warning("MongoDB unreachable, %s skipped until its next tick error=%s", timer.__name__, exc)

    return run


@dataclass
class Scheduler:
    """The leader's timers with their dependencies, and when the schedule and the reconciliation look next.

    ``next_due`` is only when this process looks again: the leader can move to another worker (one
    that joins or restarts), whose own timer says nothing about what the last leader scheduled, so
    what is due is read from ``import_logs``.
    """

    store: Store
    settings: Settings
    send: Send
    clock: Callable[[], float] = field(default=time.monotonic)  # monotonic seconds: when to look again
    now: Callable[[], datetime] = field(default=utc_now)  # wall time: compared with the store's timestamps
    next_due: float = field(init=False)
    next_reconcile: float = 0.0  # the first tick after start: a crash may have left rows unfinished

    def __post_init__(self) -> None:
        self.next_due = self.clock() + (FIRST_RUN_DELAY_SECONDS if self.settings.import_on_start else self.interval)

    @property
    def interval(self) -> float:
        return self.settings.import_interval_minutes * 60

    async def schedule_imports(self) -> None:
        """Request a run of every enabled feed that is neither busy nor scheduled within the last interval."""
        if self.clock() < self.next_due:
            return
        now = self.now()
        feeds = await self.store.enabled_feeds()
        busy = await self.store.active_sources()
        last = await self.store.last_scheduled(schedule_window_start(now, self.interval))
        self.next_due = self.clock() + self.interval  # only now: a store outage postpones the schedule by one tick
        schedule = plan_schedule(feeds, busy, last, now, self.interval)
        runs = await request_runs(self.send, self.settings, schedule.due, "schedule")
        logger.info("scheduled runs=%d skipped_in_progress=%d skipped_scheduled_recently=%d next_in_s=%.0f",
                    len(runs), schedule.in_progress, schedule.scheduled_recently, self.interval)

    async def reconcile_runs(self) -> None:
        """Hold every unfinished ``import_logs`` row against the runs table, so none stays running forever.

        The table has partitions on several workers, and only its agent may change it, so each row
        becomes an event on ``import.progress`` (keyed by runId, hence to the run's owner).
        """
        if self.clock() < self.next_reconcile:
            return
        timeout = self.settings.run_timeout_seconds
        fields = {key: 1 for key in ("runId", "status", *ROW_FIELDS)}
        stalled = 0
        async for row in self.store.import_logs.find(UNFINISHED, fields):
            decision = reconcile_event_for(row, self.now(), timeout)
            if decision is None:
                logger.warning("unfinished import_logs row without a runId skipped _id=%r", row.get("_id"))
                continue
            event, past_timeout = decision
            if past_timeout:
                stalled += 1
                logger.warning("run stalled run_id=%s status=%s: finalising as failed", row["runId"], row.get("status"))
            await self.send(self.settings.topic("import.progress"), row["runId"], event)
        self.next_reconcile = self.clock() + reconcile_interval(timeout)
        if stalled:
            logger.info("reconciled unfinished runs, %d past RUN_TIMEOUT_SECONDS", stalled)

    async def clean_raw_feeds(self) -> None:
        cutoff = self.now() - timedelta(days=self.settings.raw_feed_retention_days)
        result = await self.store.write(partial(self.store.raw_feeds.delete_many, {"fetchedAt": {"$lt": cutoff}}))
        if result.deleted_count:
            logger.info("raw_feeds cleanup removed=%d older_than=%s", result.deleted_count, iso(cutoff))

    async def count_runs_in_progress(self) -> None:
        metrics.RUNS_IN_PROGRESS.set(await self.store.import_logs.count_documents(UNFINISHED))


def attach(pipeline: Pipeline, store: Store) -> None:
    app = pipeline.app

    async def send(topic: str, key: str, value: dict[str, Any]) -> None:
        await (await app.send(topic, key=key, value=value))

    scheduler = Scheduler(store, pipeline.settings, send)
    app.timer(TICK_SECONDS, on_leader=True, name="schedule_imports")(skip_while_unreachable(scheduler.schedule_imports))
    app.timer(TICK_SECONDS, on_leader=True, name="reconcile_runs")(skip_while_unreachable(scheduler.reconcile_runs))
    app.timer(3600.0, on_leader=True, name="clean_raw_feeds")(skip_while_unreachable(scheduler.clean_raw_feeds))
    app.timer(10.0, on_leader=True, name="count_runs_in_progress")(skip_while_unreachable(scheduler.count_runs_in_progress))
