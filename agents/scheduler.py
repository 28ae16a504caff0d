"""Leader-only timers: scheduled runs, stalled-run timeouts, raw payload retention, the runs gauge.

Faust elects one leader among the workers; ``on_leader`` timers run there only, so several
workers never multiply scheduled runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from agents import metrics
from models.registry import FeedEntry
from models.runs import iso
from streams.app import Pipeline
from streams.commands import request_runs
from streams.store import Store

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0
FIRST_RUN_DELAY_SECONDS = 5.0


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
        next_due = time.monotonic() + interval
        feeds = await store.enabled_feeds()
        busy = await store.active_sources()
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
        result = await store.raw_feeds.delete_many({"fetchedAt": {"$lt": cutoff}})
        if result.deleted_count:
            logger.info("raw_feeds cleanup removed=%d older_than=%s", result.deleted_count, iso(cutoff))

    async def count_runs_in_progress() -> None:
        metrics.RUNS_IN_PROGRESS.set(await store.import_logs.count_documents({"status": {"$in": ["pending", "running"]}}))

    app.timer(TICK_SECONDS, on_leader=True, name="schedule_imports")(schedule_imports)
    app.timer(60.0, on_leader=True, name="time_out_stalled_runs")(time_out_stalled_runs)
    app.timer(3600.0, on_leader=True, name="clean_raw_feeds")(clean_raw_feeds)
    app.timer(10.0, on_leader=True, name="count_runs_in_progress")(count_runs_in_progress)
