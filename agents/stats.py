"""Stats agent: fold progress events into the runs table, project each change into ``import_logs``.

Every state change is also published on ``import.logs`` (compacted, keyed by runId) for the API's
live stream. Replayed progress is harmless: the fold counts each item sequence number once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import EventT, StreamT
from pymongo import ReplaceOne
from pymongo.errors import ConnectionFailure

from agents import metrics
from models.runs import FINISHED, as_mongo, fold, snapshot
from streams.app import Pipeline, set_current_event
from streams.store import Store

logger = logging.getLogger(__name__)


def attach(pipeline: Pipeline, store: Store) -> None:
    table = pipeline.runs_table
    topics = pipeline.topics
    settings = pipeline.settings

    async def project(snapshots: list[dict[str, Any]]) -> None:
        """Upsert the snapshots; hold the batch while MongoDB is away rather than lose a count."""
        operations = [ReplaceOne({"_id": doc["runId"]}, {"_id": doc["runId"], **as_mongo(doc)}, upsert=True) for doc in snapshots]
        delay = 0.5
        while True:
            try:
                await store.import_logs.bulk_write(operations, ordered=False)
                return
            except ConnectionFailure as exc:
                logger.warning("MongoDB unreachable, import_logs projection held error=%s retry_in=%.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stats(stream: StreamT[Any]) -> None:
        async for batch in stream.noack_take(1000, within=0.25):
            events: list[EventT] = list(batch)  # type: ignore[arg-type]
            by_run: dict[str, list[EventT]] = {}
            for event in events:
                by_run.setdefault(event.value["runId"], []).append(event)
            snapshots = []
            for run_id, run_events in by_run.items():
                set_current_event(run_events[0])
                before = table.get(run_id)
                state = before
                for event in run_events:
                    state = fold(state, event.value, settings.max_failures_kept)
                if state == before or state is None:
                    continue
                table[run_id] = state
                snapshots.append(snapshot(state))
                if state["status"] in FINISHED and (before is None or before["status"] not in FINISHED):
                    metrics.RUNS_FINISHED.labels(status=state["status"]).inc()
                    logger.info(
                        "run finished run_id=%s url=%s status=%s fetched=%d new=%d updated=%d unchanged=%d failed=%d duration_ms=%s",
                        run_id, state["sourceUrl"], state["status"], state["totalFetched"], state["newJobs"],
                        state["updatedJobs"], state["unchangedJobs"], state["failedJobs"], state["durationMs"],
                    )
            if snapshots:
                await project(snapshots)
                pending = [await topics.logs.send(key=doc["runId"], value=doc) for doc in snapshots]
                await asyncio.gather(*pending)
            for event in events:
                await stream.ack(event)

    pipeline.app.agent(topics.progress, name="stats", concurrency=1)(stats)
