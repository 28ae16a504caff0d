"""Stats agent: fold progress events into the runs table, project every run a batch touched into ``import_logs``.

Every projection is also published on ``import.logs`` (compacted, keyed by runId) for the API's
live stream. Replayed progress is harmless: the fold counts each item sequence number once. The
projection is idempotent (a replace by runId) and is done for every run a batch *touched*, changed
or not: the table write is durable at once, so after a crash between the write and the projection
the replayed events fold to the same state, and only re-projecting them finishes the run in
``import_logs``. A finished ``import_logs`` row is never replaced (a stale worker after a rebalance,
or a late event, cannot reopen it).

Bounded state: the repair timer reads only an in-memory index of this worker's unfinished runs
(rebuilt from the table by a periodic scan that yields to the event loop, since a restart or
rebalance hands over runs the index has not seen); the same scan asks for finished runs older than
``RUNS_RETENTION_HOURS`` to be expired. Table changes happen only in the agent (FAUST-NOTES §4), so
expiry and reconciliation (``agents/scheduler.py``) reach it as events on ``import.progress``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faust.types import StreamT

from agents import metrics
from agents.inbox import Inbox, Received
from models.messages import Progress, decode_progress
from models.runs import FINISHED, as_mongo, fold, iso, last_run_update, missing_seqs, needs_repair, parse_iso, snapshot
from streams.app import Pipeline, Topics, ack_all, consumer_lag
from streams.faust_internals import ChangelogAcks, batches, set_current_event
from streams.settings import Settings
from streams.store import DUPLICATE_KEY, Store, until_reachable

logger = logging.getLogger(__name__)

REPAIR_CHECK_SECONDS = 5.0
REPAIR_MAX_ITEMS = 100_000
STUCK_FACTOR = 4  # a backlog holds repairs back this many repair delays at most (see repair_stalled_runs)
SCAN_SECONDS = 300.0  # full scans of the table: index rebuild after a restart/rebalance, expiry
SCAN_YIELD_EVERY = 200  # runs decoded between two yields to the event loop
# Events that may begin a run in the table; any other event of a run the table does not know is
# late (its run expired) or stray, and creating a run from it would leave a phantom forever.
CREATES_RUN = frozenset({"requested", "started", "timeout"})


def expired(state: dict[str, Any], now: datetime, retention_hours: float) -> bool:
    """A finished run whose ``finishedAt`` is older than the retention period."""
    finished = parse_iso(state.get("finishedAt")) if state.get("status") in FINISHED else None
    return finished is not None and now - finished >= timedelta(hours=retention_hours)


def expire_event(run_id: str, at: str) -> dict[str, Any]:
    """Ask the stats agent (the only writer of the runs table) to drop a finished run past retention."""
    return {"type": "expire", "runId": run_id, "at": at}


@dataclass
class Stats:
    """The stats step with its dependencies and its in-memory state (rebuilt by the scan after a restart)."""

    app: Any  # the Faust app: consumer lag before a repair
    table: Any  # the runs table (runId -> run state)
    topics: Topics
    settings: Settings
    store: Store
    # runIds of unfinished runs in this worker's partitions (kept by the agent, completed by the scan).
    unfinished: set[str] = field(default_factory=set)
    # runId -> (monotonic time of the last repair, repairs so far): each repair waits twice as long,
    # so a run that is merely slow (a backlog, not a loss) costs a bounded number of replays.
    repairs: dict[str, tuple[float, int]] = field(default_factory=dict)
    next_scan: float = 0.0
    # runId -> the status its feed's lastRun shows (unfinished runs only; a restart writes each once more).
    last_status: dict[str, str] = field(default_factory=dict)
    changelog: ChangelogAcks | None = None  # set by attach(): the runs table's changelog records awaited before an ack

    async def project(self, snapshots: list[dict[str, Any]]) -> set[str]:
        """Replace each unfinished row by its snapshot; return the runIds whose row was already finished.

        Held while MongoDB is away rather than lose a count. The filter leaves finished rows alone;
        on such a row the upsert's insert is a duplicate key, which is the answer "already final".
        """
        writes = [({"_id": doc["runId"], "status": {"$nin": sorted(FINISHED)}}, {"_id": doc["runId"], **as_mongo(doc)})
                  for doc in snapshots]
        errors = await until_reachable(lambda: self.store.bulk_upsert(self.store.import_logs, writes), "import_logs projection")
        final = set()
        for error in errors:
            run_id = writes[error["index"]][0]["_id"]
            if error.get("code") == DUPLICATE_KEY:
                final.add(run_id)
            else:
                logger.error("import_logs rejected the snapshot of run_id=%s: %s", run_id, error.get("errmsg"))
        await self.project_last_runs([doc for doc in snapshots if doc["runId"] not in final])
        return final

    async def project_last_runs(self, snapshots: list[dict[str, Any]]) -> None:
        """Each run's feed shows it as ``lastRun`` (``GET /api/feeds`` reads it with the feed), written when
        the run's status changes: the counters change at every batch, the summary only at a transition."""
        changed = [doc for doc in snapshots if self.last_status.get(doc["runId"]) != doc["status"]]
        updates = [update for doc in changed if (update := last_run_update(doc)) is not None]
        if updates:
            errors = await until_reachable(lambda: self.store.bulk_upsert(self.store.feeds, updates, upsert=False),
                                           "feeds' last runs")
            for error in errors:
                logger.warning("feeds refused a lastRun update: %s", error.get("errmsg"))
        for doc in changed:
            if doc["status"] in FINISHED:
                self.last_status.pop(doc["runId"], None)
            else:
                self.last_status[doc["runId"]] = doc["status"]

    def fold_run(self, run_id: str, run_events: list[Received[Progress]], now: datetime) -> dict[str, Any] | None:
        """The run's new state after its events, written to the table if it changed; None when there is no run."""
        set_current_event(run_events[0].event)
        before: dict[str, Any] | None = self.table.get(run_id)
        state = before
        expire = False
        for event in run_events:
            kind = event.value["type"]
            if kind == "expire":
                expire = True
            elif state is None and kind not in CREATES_RUN:
                logger.info("progress event %s for a run the table does not know (expired or stray) run_id=%s", kind, run_id)
            else:
                state = fold(state, event.value, self.settings.max_failures_kept)
        if state is None:
            return None
        if expire and before is not None and state == before and expired(state, now, self.settings.runs_retention_hours):
            del self.table[run_id]
            self.unfinished.discard(run_id)
            self.repairs.pop(run_id, None)
            return None
        if state != before:
            self.table[run_id] = state
        if state["status"] in FINISHED:
            self.unfinished.discard(run_id)
            self.repairs.pop(run_id, None)
            if before is None or before["status"] not in FINISHED:
                metrics.RUNS_FINISHED.labels(status=state["status"]).inc()
                logger.info(
                    "run finished run_id=%s url=%s status=%s fetched=%d new=%d updated=%d unchanged=%d failed=%d duration_ms=%s",
                    run_id, state["sourceUrl"], state["status"], state["totalFetched"], state["newJobs"],
                    state["updatedJobs"], state["unchangedJobs"], state["failedJobs"], state["durationMs"],
                )
        else:
            self.unfinished.add(run_id)
        return state

    async def run(self, stream: StreamT[Any]) -> None:
        """Held across a rebalance: one batch of progress events, unacked until the runs table has them and
        their ``import_logs`` rows and ``import.logs`` snapshots are written (the projection waits while
        MongoDB is away, as the sink does). Redelivered events fold to the same state: the fold counts
        each item sequence number once, and a finished row is never replaced."""
        inbox = Inbox(decode_progress, self.topics.dlq, self.settings.max_items_per_feed)
        async for events in batches(stream, 1000, within=0.25):
            by_run: dict[str, list[Received[Progress]]] = {}
            for received in await inbox.open(events):
                by_run.setdefault(received.value["runId"], []).append(received)
            now = datetime.now(UTC)
            states = [state for run_id, run_events in by_run.items() if (state := self.fold_run(run_id, run_events, now))]
            if states:
                snapshots = [snapshot(state) for state in states]
                final = await self.project(snapshots)
                # A row already final stays as it is; only a finished snapshot (the same one) goes out again.
                outgoing = [doc for doc in snapshots if doc["runId"] not in final or doc["status"] in FINISHED]
                pending = [await self.topics.logs.send(key=doc["runId"], value=doc) for doc in outgoing]
                await asyncio.gather(*pending)
            if self.changelog is not None:
                await self.changelog.wait()  # the folded counts are in the broker before the events are acked
            await ack_all(stream, events)

    async def repair_stalled_runs(self) -> None:
        """Ask the poller to republish the items of a silent run that still lack an outcome.

        Every step downstream is idempotent, so a republished item either gets its first outcome
        or its original one again; this makes the counts exact even if a consumer skipped events
        (faust-streaming has open reports of that around rebalances and restarts). Only the runs
        of the unfinished index are read.
        """
        now = datetime.now(UTC)
        candidates = []
        for run_id in list(self.unfinished):
            state = self.table.get(run_id)
            if state is None or state["status"] in FINISHED:
                self.unfinished.discard(run_id)
            elif needs_repair(state, now, self.settings.repair_after_seconds):
                candidates.append((run_id, state))
        for run_id in [run_id for run_id in self.repairs if run_id not in self.unfinished]:
            del self.repairs[run_id]
        if not candidates:
            return
        backlog = sum((await consumer_lag(self.app, self.settings.topic_prefix)).values())
        if backlog > 0:
            # Silent because busy, not because something was lost: wait for the backlog to drain. But a
            # backlog that never drains is itself the loss (an event the consumer skipped holds its
            # partition's commit back for good), so a run silent STUCK_FACTOR times as long is repaired anyway.
            stuck = self.settings.repair_after_seconds * STUCK_FACTOR
            candidates = [(run_id, state) for run_id, state in candidates if needs_repair(state, now, stuck)]
            if not candidates:
                return
            logger.warning("repairing %d run(s) silent for %.0fs or more although the consumers report a backlog of %d",
                           len(candidates), stuck, backlog)
        for run_id, state in candidates:
            last, count = self.repairs.get(run_id, (-1e18, 0))
            if time.monotonic() - last < self.settings.repair_after_seconds * 2**count:
                continue
            missing = missing_seqs(state, REPAIR_MAX_ITEMS)
            if not missing:
                continue
            self.repairs[run_id] = (time.monotonic(), count + 1)
            logger.warning("run silent for %.0fs or more with %d items unaccounted: republishing them (repair %d) run_id=%s",
                           self.settings.repair_after_seconds, len(missing), count + 1, run_id)
            metrics.REPAIRS.inc()
            command = {key: state[key] for key in ("runId", "sourceUrl", "sourceName", "trigger", "requestedAt")}
            if replay_of := (state.get("meta") or {}).get("replayOf"):  # a replay republishes from the payload it replays
                command["replayOf"] = replay_of
            await (await self.topics.commands.send(key=state["sourceUrl"], value={**command, "repairSeqs": missing}))

    async def scan_runs(self) -> None:
        """Walk this worker's part of the table: index unfinished runs, ask for expired ones to be dropped.

        Yields to the event loop every ``SCAN_YIELD_EVERY`` runs; the table holds at most the runs of
        the retention period, so a scan is bounded too.
        """
        now = datetime.now(UTC)
        expiring: list[str] = []
        for index, run_id in enumerate(list(self.table.keys())):  # keys only: values are decoded one at a time below
            if index % SCAN_YIELD_EVERY == SCAN_YIELD_EVERY - 1:
                await asyncio.sleep(0)
            state = self.table.get(run_id)
            if state is None:
                continue
            if state["status"] not in FINISHED:
                self.unfinished.add(run_id)
            elif expired(state, now, self.settings.runs_retention_hours):
                expiring.append(run_id)
        pending = [await self.topics.progress.send(key=run_id, value=expire_event(run_id, iso(now))) for run_id in expiring]
        await asyncio.gather(*pending)
        if expiring:
            logger.info("runs past retention (%.0fh) to expire from the table: %d", self.settings.runs_retention_hours, len(expiring))

    async def maintain_runs(self) -> None:
        """The repair check every tick; a full scan at the first tick after start and every SCAN_SECONDS.

        An exception in a Faust timer stops the worker, and the table state that caused it would stop
        the partition's next owner too: a failed tick is logged, and the next tick tries again.
        """
        try:
            if time.monotonic() >= self.next_scan:
                self.next_scan = time.monotonic() + SCAN_SECONDS
                await self.scan_runs()
            await self.repair_stalled_runs()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("run maintenance failed; the next tick tries again")


def attach(pipeline: Pipeline, store: Store) -> None:
    stats = Stats(pipeline.app, pipeline.runs_table, pipeline.topics, pipeline.settings, store,
                  changelog=ChangelogAcks(pipeline.runs_table))
    pipeline.app.agent(pipeline.source("import.progress"), name="stats", concurrency=1)(stats.run)
    pipeline.app.timer(REPAIR_CHECK_SECONDS, name="repair_stalled_runs")(stats.maintain_runs)
