"""Leader-only timers: scheduled runs, reconciliation of unfinished runs (and their timeouts), raw payload retention, the runs gauge.

Faust elects one leader among the workers; ``on_leader`` timers run there only, so several
workers never multiply scheduled runs. A timer whose store call fails to connect or passes its
deadline tries again at its next tick instead of crashing the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial, wraps

from pymongo.errors import PyMongoError

from agents import metrics
from models.registry import FeedEntry
from models.runs import ROW_FIELDS, iso, reconcile_event, timeout_event
from streams.app import Pipeline
from streams.commands import request_runs
from streams.store import Store, unreachable

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0
FIRST_RUN_DELAY_SECONDS = 5.0
RECONCILE_MAX_SECONDS = 60.0


def reconcile_interval(run_timeout_seconds: float) -> float:
    """Often enough that a run is finalised within a quarter of its timeout after it, at most once a minute."""
    return min(RECONCILE_MAX_SECONDS, max(TICK_SECONDS, run_timeout_seconds / 4))


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


def attach(pipeline: Pipeline, store: Store) -> None:
    app, settings = pipeline.app, pipeline.settings
    interval = settings.import_interval_minutes * 60
    next_due = time.monotonic() + (FIRST_RUN_DELAY_SECONDS if settings.import_on_start else interval)

    async def send(topic: str, key: str, value: dict[str, object]) -> None:
        await (await app.send(topic, key=key, value=value))

    async def schedule_imports() -> None:
        """Request a run of every enabled feed that is neither busy nor scheduled within the last interval.

        ``next_due`` is only when this process looks again: the leader can move to another worker (one
        that joins or restarts), whose own timer says nothing about what the last leader scheduled, so
        what is due is read from ``import_logs`` (less one tick, so a run requested a moment after this
        process's tick does not push its feed back a tick).
        """
        nonlocal next_due
        if time.monotonic() < next_due:
            return
        feeds = await store.enabled_feeds()
        busy = await store.active_sources()
        recent = await store.recently_scheduled(datetime.now(UTC) - timedelta(seconds=interval - TICK_SECONDS))
        next_due = time.monotonic() + interval  # only now: a store outage postpones the schedule by one tick
        due = [FeedEntry(doc["url"], doc.get("name", "")) for doc in feeds if doc["url"] not in busy and doc["url"] not in recent]
        runs = await request_runs(send, settings, due, "schedule")
        in_progress = sum(doc["url"] in busy for doc in feeds)
        logger.info("scheduled runs=%d skipped_in_progress=%d skipped_scheduled_recently=%d next_in_s=%.0f",
                    len(runs), in_progress, len(feeds) - len(due) - in_progress, interval)

    next_reconcile = 0.0  # the first tick after start: a crash may have left rows unfinished

    async def reconcile_runs() -> None:
        """Hold every unfinished ``import_logs`` row against the runs table, so none stays running forever.

        The table has partitions on several workers, and only its agent may change it, so each row
        becomes an event on ``import.progress`` (keyed by runId, hence to the run's owner): a row past
        RUN_TIMEOUT_SECONDS a ``timeout`` (the run is finalised as failed, rebuilt from the row if the
        table lost it; a run the table has finished just gets its final projection), any other a
        ``reconcile``, which re-projects the run's state from the table.
        """
        nonlocal next_reconcile
        if time.monotonic() < next_reconcile:
            return
        cutoff = datetime.now(UTC) - timedelta(seconds=settings.run_timeout_seconds)
        fields = {key: 1 for key in ("runId", "status", *ROW_FIELDS)}
        stalled = 0
        async for row in store.import_logs.find({"status": {"$in": ["pending", "running"]}}, fields):
            at = iso(datetime.now(UTC))
            begun = row.get("startedAt") or row.get("requestedAt")
            if begun is None or begun < cutoff:
                stalled += 1
                logger.warning("run stalled run_id=%s status=%s: finalising as failed", row["runId"], row["status"])
                event = timeout_event(row, at, settings.run_timeout_seconds)
            else:
                event = reconcile_event(row, at)
            await send(settings.topic("import.progress"), row["runId"], event)
        next_reconcile = time.monotonic() + reconcile_interval(settings.run_timeout_seconds)
        if stalled:
            logger.info("reconciled unfinished runs, %d past RUN_TIMEOUT_SECONDS", stalled)

    async def clean_raw_feeds() -> None:
        cutoff = datetime.now(UTC) - timedelta(days=settings.raw_feed_retention_days)
        result = await store.write(partial(store.raw_feeds.delete_many, {"fetchedAt": {"$lt": cutoff}}))
        if result.deleted_count:
            logger.info("raw_feeds cleanup removed=%d older_than=%s", result.deleted_count, iso(cutoff))

    async def count_runs_in_progress() -> None:
        metrics.RUNS_IN_PROGRESS.set(await store.import_logs.count_documents({"status": {"$in": ["pending", "running"]}}))

    app.timer(TICK_SECONDS, on_leader=True, name="schedule_imports")(skip_while_unreachable(schedule_imports))
    app.timer(TICK_SECONDS, on_leader=True, name="reconcile_runs")(skip_while_unreachable(reconcile_runs))
    app.timer(3600.0, on_leader=True, name="clean_raw_feeds")(skip_while_unreachable(clean_raw_feeds))
    app.timer(10.0, on_leader=True, name="count_runs_in_progress")(skip_while_unreachable(count_runs_in_progress))
