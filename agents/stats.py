"""Stats agent: fold progress events into the runs table, project each change into ``import_logs``.

Every state change is also published on ``import.logs`` (compacted, keyed by runId) for the API's
live stream. Replayed progress is harmless: the fold counts each item sequence number once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from faust.types import StreamT

from agents import metrics
from models.runs import FINISHED, as_mongo, fold, missing_seqs, needs_repair, snapshot
from streams.app import JsonEvent, Pipeline, ack_all, batches, consumer_lag, set_current_event
from streams.store import Store, until_reachable

logger = logging.getLogger(__name__)

REPAIR_CHECK_SECONDS = 5.0
REPAIR_MAX_ITEMS = 100_000


def attach(pipeline: Pipeline, store: Store) -> None:
    table = pipeline.runs_table
    topics = pipeline.topics
    settings = pipeline.settings

    async def project(snapshots: list[dict[str, Any]]) -> None:
        """Upsert the snapshots; hold the batch while MongoDB is away rather than lose a count."""
        writes = [({"_id": doc["runId"]}, {"_id": doc["runId"], **as_mongo(doc)}) for doc in snapshots]
        errors = await until_reachable(lambda: store.bulk_upsert(store.import_logs, writes), "import_logs projection")
        for error in errors:
            logger.error("import_logs rejected the snapshot of run_id=%s: %s", writes[error["index"]][0]["_id"], error.get("errmsg"))

    async def stats(stream: StreamT[Any]) -> None:
        async for events in batches(stream, 1000, within=0.25):
            by_run: dict[str, list[JsonEvent]] = {}
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
            await ack_all(stream, events)

    # runId → (monotonic time of the last repair, repairs so far): each repair waits twice as long,
    # so a run that is merely slow (a backlog, not a loss) costs a bounded number of replays.
    repairs: dict[str, tuple[float, int]] = {}

    async def repair_stalled_runs() -> None:
        """Ask the poller to republish the items of a silent run that still lack an outcome.

        Every step downstream is idempotent, so a republished item either gets its first outcome
        or its original one again; this makes the counts exact even if a consumer skipped events
        (faust-streaming has open reports of that around rebalances and restarts).
        """
        now = datetime.now(UTC)
        candidates = [(run_id, state) for run_id, state in list(table.items())
                      if state is not None and needs_repair(state, now, settings.repair_after_seconds)]
        if not candidates:
            return
        backlog = sum((await consumer_lag(pipeline.app, settings.topic_prefix)).values())
        if backlog > 0:
            return  # silent because busy, not because something was lost: wait for the backlog to drain
        for run_id, state in candidates:
            last, count = repairs.get(run_id, (-1e18, 0))
            if time.monotonic() - last < settings.repair_after_seconds * 2**count:
                continue
            missing = missing_seqs(state, REPAIR_MAX_ITEMS)
            if not missing:
                continue
            repairs[run_id] = (time.monotonic(), count + 1)
            logger.warning("run silent for %.0fs or more with %d items unaccounted: republishing them (repair %d) run_id=%s",
                           settings.repair_after_seconds, len(missing), count + 1, run_id)
            metrics.REPAIRS.inc()
            command = {key: state[key] for key in ("runId", "sourceUrl", "sourceName", "trigger", "requestedAt")}
            await (await topics.commands.send(key=state["sourceUrl"], value={**command, "repairSeqs": missing}))

    pipeline.app.agent(topics.progress, name="stats", concurrency=1)(stats)
    pipeline.app.timer(REPAIR_CHECK_SECONDS, name="repair_stalled_runs")(repair_stalled_runs)
