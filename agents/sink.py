"""Sink agent: windowed micro-batches of created/updated postings, one unordered bulk upsert each.

A batch is acked only after MongoDB accepted it. While MongoDB is unreachable the agent keeps
retrying the same batch (back-pressure: the partition stops moving, nothing is dropped). A posting
MongoDB rejects becomes a failed item and a ``jobs.dlq`` message; the rest of the batch is written.
After the write, the changes are published on ``jobs.changes`` for downstream consumers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from faust.types import StreamT
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from agents import metrics
from models.postings import job_insert, job_upsert
from models.runs import iso, outcomes_event, parse_iso
from streams.app import Pipeline, ack_all, batches
from streams.store import Store, until_reachable

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000


async def write_batch(store: Store, changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Write the newest change per dedupeKey; return ``{dedupeKey: reason}`` of those MongoDB rejected.

    Created postings are one unordered ``insert_many`` (no lookup: the dedupe table already knows
    they are new); a duplicate key there is a replay, confirmed by one ``$in`` read of the
    fingerprints. Updated postings (and stale duplicates) are one unordered bulk of upserts by
    ``_id``. Raises ConnectionFailure when MongoDB cannot be reached (the caller retries).
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for change in changes:
        key = change["job"]["dedupeKey"]
        if key not in latest or change["version"] >= latest[key]["version"]:
            latest[key] = change
    inserts = [key for key, change in latest.items() if change["version"] == 1]
    updates = [key for key, change in latest.items() if change["version"] != 1]
    rejected: dict[str, str] = {}
    if inserts:
        try:
            await store.jobs.insert_many([job_insert(latest[key]) for key in inserts], ordered=False)
        except BulkWriteError as exc:
            duplicates = []
            for error in exc.details["writeErrors"]:
                key = inserts[error["index"]]
                if error.get("code") == DUPLICATE_KEY:
                    duplicates.append(key)
                else:
                    rejected[key] = f"write error {error.get('code')}: {error.get('errmsg')}"
            if duplicates:
                stored = {doc["_id"]: doc.get("fingerprint") async for doc in store.jobs.find(
                    {"_id": {"$in": duplicates}}, {"fingerprint": 1})}
                # Same fingerprint: a replay of a write that already happened. Otherwise repair it.
                updates.extend(key for key in duplicates if stored.get(key) != latest[key]["fingerprint"])
    if updates:
        rejected.update(await upsert(store, [latest[key] for key in updates]))
    return rejected


async def upsert(store: Store, changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    operations = [UpdateOne(*job_upsert(change), upsert=True) for change in changes]
    try:
        await store.jobs.bulk_write(operations, ordered=False)
        return {}
    except BulkWriteError as exc:
        return {changes[error["index"]]["job"]["dedupeKey"]: f"write error {error.get('code')}: {error.get('errmsg')}"
                for error in exc.details["writeErrors"]}
    except ConnectionFailure:
        raise
    except (PyMongoError, KeyError) as exc:
        # FerretDB answers a failed update bulk in a shape pymongo cannot merge (KeyError): find
        # the culprits one by one (upserts are idempotent).
        logger.warning("bulk upsert failed as a whole (%r); retrying %d upserts one by one", exc, len(operations))
    rejected: dict[str, str] = {}
    for change in changes:
        try:
            await store.jobs.update_one(*job_upsert(change), upsert=True)
        except ConnectionFailure:
            raise
        except PyMongoError as item_exc:
            rejected[change["job"]["dedupeKey"]] = f"write error: {item_exc}"
    return rejected


def attach(pipeline: Pipeline, store: Store) -> None:
    topics = pipeline.topics
    settings = pipeline.settings

    async def write_timed(changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        started = time.perf_counter()
        rejected = await write_batch(store, changes)
        elapsed = time.perf_counter() - started
        metrics.BULK_WRITE_SECONDS.observe(elapsed)
        metrics.BATCH_SIZE.observe(len(changes))
        logger.info("bulk_write collection=jobs count=%d rejected=%d elapsed_ms=%.1f", len(changes), len(rejected), elapsed * 1000)
        return rejected

    async def sink(stream: StreamT[Any]) -> None:
        async for events in batches(stream, settings.batch_size, within=settings.batch_window_seconds):
            changes = [event.value for event in events]
            rejected = await until_reachable(partial(write_timed, changes), "batch (not acked)", on_retry=metrics.WRITE_RETRIES.inc)
            written_at = datetime.now(UTC)
            pending = []
            outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for change in changes:
                job = change["job"]
                key, feed = job["dedupeKey"], job["sourceUrl"]
                if key in rejected:
                    item = {"seq": change["seq"], "outcome": "failed", "key": job.get("externalId") or key,
                            "reason": rejected[key], "stage": "write"}
                    dlq = {"reason": rejected[key], "stage": "write", "payload": change}
                    pending.append(await topics.dlq.send(key=key, value=dlq))
                else:
                    item = {"seq": change["seq"], "outcome": change["type"]}
                    pending.append(await topics.changes.send(key=key, value=change))
                    fetched = parse_iso(change["occurredAt"])
                    if fetched is not None:
                        metrics.LATENCY_SECONDS.observe((written_at - fetched).total_seconds())
                outcomes[change["runId"]].append(item)
                metrics.ITEMS.labels(feed=feed, outcome=item["outcome"]).inc()
            at = iso(written_at)
            for run_id, items in outcomes.items():
                pending.append(await topics.progress.send(key=run_id, value=outcomes_event(run_id, items, at, batch=True)))
            await asyncio.gather(*pending)
            await ack_all(stream, events)

    pipeline.app.agent(topics.upserts, name="sink", concurrency=1)(sink)
