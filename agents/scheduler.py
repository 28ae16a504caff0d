"""Leader-only timers: scheduled runs, stalled-run timeouts, raw payload retention, the runs gauge.

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
from models.runs import iso
from streams.app import Pipeline
from streams.commands import request_runs
from streams.store import Store, unreachable

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0
FIRST_RUN_DELAY_SECONDS = 5.0


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
        nonlocal next_due
        if time.monotonic() < next_due:
            return
        feeds = await store.enabled_feeds()
        busy = await store.active_sources()
        next_due = time.monotonic() + interval  # only now: a store outage postpones the schedule by one tick
        due = [FeedEntry(doc["url"], doc.get("name", "")) for doc in feeds if doc["url"] not in busy]
        runs = await request_runs(send, settings, due, "schedule")
        logger.info("scheduled runs=%d skipped_in_progress=%d next_in_s=%.0f", len(runs), len(feeds) - len(due), interval)

    async def time_out_stalled_runs() -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=settings.run_timeout_seconds)
        stalled = store.import_logs.find(
            {"status": {"$in": ["pending", "running"]},
             "$or": [{"startedAt": {"$lt": cutoff}}, {"startedAt": None, "requestedAt": {"$lt": cutoff}}]},
            {"runId": 1},
        )
        async for doc in stalled:
            logger.warning("run stalled run_id=%s: finalising as failed", doc["runId"])
            await send(settings.topic("import.progress"), doc["runId"],
                       {"type": "timeout", "runId": doc["runId"], "at": iso(datetime.now(UTC)),
                        "afterSeconds": settings.run_timeout_seconds})

    async def clean_raw_feeds() -> None:
        cutoff = datetime.now(UTC) - timedelta(days=settings.raw_feed_retention_days)
        result = await store.write(partial(store.raw_feeds.delete_many, {"fetchedAt": {"$lt": cutoff}}))
        if result.deleted_count:
            logger.info("raw_feeds cleanup removed=%d older_than=%s", result.deleted_count, iso(cutoff))

    async def count_runs_in_progress() -> None:
        metrics.RUNS_IN_PROGRESS.set(await store.import_logs.count_documents({"status": {"$in": ["pending", "running"]}}))

    app.timer(TICK_SECONDS, on_leader=True, name="schedule_imports")(skip_while_unreachable(schedule_imports))
    app.timer(60.0, on_leader=True, name="time_out_stalled_runs")(skip_while_unreachable(time_out_stalled_runs))
    app.timer(3600.0, on_leader=True, name="clean_raw_feeds")(skip_while_unreachable(clean_raw_feeds))
    app.timer(10.0, on_leader=True, name="count_runs_in_progress")(skip_while_unreachable(count_runs_in_progress))
