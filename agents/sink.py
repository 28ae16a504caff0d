"""Sink agent: windowed micro-batches of ``jobs.upserts`` envelopes (change events), written as unordered inserts/upserts.

The store cuts a batch into commands of at most ``MONGO_WRITE_BATCH`` statements, with at most
``MONGO_MAX_INFLIGHT_WRITES`` in flight, each with a ``MONGO_TIMEOUT_SECONDS`` deadline. A batch is
acked only after MongoDB accepted it. While MongoDB is unreachable (or a command passes its
deadline) the agent keeps retrying the same batch with back-off (back-pressure: the partition stops
moving, nothing is dropped; the writes are idempotent, so a retry is safe). A posting
MongoDB rejects becomes a failed item and a ``jobs.dlq`` message; the rest of the batch is written.
After the write, the changes are published on ``jobs.changes`` for downstream consumers, one JSON
message per change keyed by dedupeKey (SPEC §4), through the app's producer directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from faust.types import StreamT
from pymongo.errors import PyMongoError

from agents import metrics
from agents.inbox import Inbox
from models.dedupe import rejected_event
from models.envelopes import partition_of
from models.messages import Change, decode_changes
from models.postings import job_insert, job_upsert, search_document, version_guard
from models.runs import iso, outcomes_event, parse_iso, utc_now
from streams.app import Pipeline, Topics, ack_all
from streams.faust_internals import batches
from streams.settings import Settings
from streams.store import DUPLICATE_KEY, Store, unreachable, until_reachable

logger = logging.getLogger(__name__)



async def write_batch(store: Store, changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Write the newest change per dedupeKey; return ``{dedupeKey: reason}`` of those MongoDB rejected.

    Created postings are unordered inserts (no lookup: the dedupe table already knows they are
    new); a duplicate key there is a replay, confirmed by an ``$in`` read of the fingerprints.
    Updated postings (and stale duplicates) are unordered upserts by ``_id``. The store cuts both
    into small commands (``MONGO_WRITE_BATCH``). Then the ``job_search`` documents of the written
    postings follow. An upsert the version guard refuses (a newer version is stored: a stale writer
    after a rebalance) is skipped, not rejected. Raises what ``streams.store.unreachable``
    recognises (the caller retries).
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for change in changes:
        key = change["job"]["dedupeKey"]
        if key not in latest or change["version"] >= latest[key]["version"]:
            latest[key] = change
    created = [change for change in latest.values() if change["version"] == 1]
    updated = [change for change in latest.values() if change["version"] != 1]
    rejected: dict[str, str] = {}
    duplicates = []
    for error in await store.insert_unordered(store.jobs, [job_insert(change) for change in created]):
        change = created[error["index"]]
        if error.get("code") == DUPLICATE_KEY:
            duplicates.append(change)
        else:
            rejected[key_of(change)] = write_error(error)
    if duplicates:
        stored = {doc["_id"]: doc.get("fingerprint")
                  for doc in await store.find_by_ids(store.jobs, [key_of(change) for change in duplicates], {"fingerprint": 1})}
        # Same fingerprint: a replay of a write that already happened. Otherwise repair it.
        updated.extend(change for change in duplicates if stored.get(key_of(change)) != change["fingerprint"])
    errors = await store.bulk_upsert(store.jobs, [job_upsert(change) for change in updated])
    superseded = await newer_stored(store, [updated[error["index"]] for error in errors if error.get("code") == DUPLICATE_KEY])
    for error in errors:
        change = updated[error["index"]]
        if key_of(change) in superseded:
            logger.info("stale write skipped: a newer version is stored key=%s version=%s", key_of(change), change["version"])
        else:
            rejected[key_of(change)] = write_error(error)
    upserted = {key_of(change) for change in updated}
    await write_search(store,
                       [change for change in created if key_of(change) not in rejected and key_of(change) not in upserted],
                       [change for change in updated if key_of(change) not in rejected and key_of(change) not in superseded])
    return rejected


async def newer_stored(store: Store, changes: Sequence[Mapping[str, Any]]) -> set[str]:
    """Keys of ``changes`` whose stored document has a newer version: the version guard refused them.

    The guard's refusal is a duplicate ``_id`` error, like a unique-index conflict; the stored
    version tells the two apart. A superseded change is not a failure: a newer write already won.
    """
    if not changes:
        return set()
    stored = {doc["_id"]: doc.get("version")
              for doc in await store.find_by_ids(store.jobs, [key_of(change) for change in changes], {"version": 1})}
    return {key_of(change) for change in changes
            if isinstance(stored.get(key_of(change)), int) and stored[key_of(change)] > change["version"]}


async def write_search(store: Store, created: Sequence[Mapping[str, Any]], updated: Sequence[Mapping[str, Any]]) -> None:
    """Keep ``job_search`` in step with ``jobs``: inserts for created postings, upserts by ``_id`` for updated ones.

    A duplicate key on insert is a replay (already written). Any other failure that is not the
    store being away is logged and counted, never turned into a failed posting: the job is stored,
    and the next change of the posting rewrites its search document.
    """
    try:
        errors = await store.insert_unordered(store.job_search, [search_document(change) for change in created])
        errors = [error for error in errors if error.get("code") != DUPLICATE_KEY]
        upserts = []
        for change in updated:
            document = search_document(change)
            upserts.append(({"_id": document.pop("_id"), **version_guard(change["version"])}, {"$set": document}))
        # A duplicate _id here is the version guard: a newer search document is stored already.
        errors += [error for error in await store.bulk_upsert(store.job_search, upserts) if error.get("code") != DUPLICATE_KEY]
    except PyMongoError as exc:
        if unreachable(exc):
            raise
        logger.warning("job_search write failed as a whole: %r (%d postings)", exc, len(created) + len(updated))
        metrics.SEARCH_WRITE_FAILURES.inc(len(created) + len(updated))
        return
    if errors:
        logger.warning("job_search rejected %d documents, first: %s", len(errors), write_error(errors[0]))
        metrics.SEARCH_WRITE_FAILURES.inc(len(errors))


def key_of(change: Mapping[str, Any]) -> str:
    return str(change["job"]["dedupeKey"])


def write_error(error: Mapping[str, Any]) -> str:
    return f"write error {error.get('code')}: {error.get('errmsg')}"


@dataclass
class Sink:
    """The sink step with its dependencies: the store, the pipeline's topics and producer, settings."""

    store: Store
    topics: Topics
    producer: Any  # the app's producer: jobs.changes goes out through it without Faust's per-message machinery
    settings: Settings
    clock: Callable[[], datetime] = field(default=utc_now)

    async def write_timed(self, changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        started = time.perf_counter()
        rejected = await write_batch(self.store, changes)
        elapsed = time.perf_counter() - started
        metrics.BULK_WRITE_SECONDS.observe(elapsed)
        metrics.BATCH_SIZE.observe(len(changes))
        logger.info("bulk_write collection=jobs count=%d rejected=%d elapsed_ms=%.1f", len(changes), len(rejected), elapsed * 1000)
        return rejected

    async def handle(self, changes: Sequence[Change]) -> None:
        """Write a batch of change events (retrying while the store is away), then publish what followed."""
        rejected = await until_reachable(partial(self.write_timed, changes), "batch (not acked)", on_retry=metrics.WRITE_RETRIES.inc)
        written_at = self.clock()
        pending: list[Awaitable[Any]] = []
        failed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        written: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"created": [], "updated": []})
        counts: Counter[tuple[str, str]] = Counter()
        changes_topic = self.settings.topic("jobs.changes")
        for change in changes:
            job = change["job"]
            key = job["dedupeKey"]
            if key in rejected:
                outcome = "failed"
                failed[change["runId"]].append({"seq": change["seq"], "outcome": outcome, "key": job.get("externalId") or key,
                                                "reason": rejected[key], "stage": "write"})
                dlq = {"reason": rejected[key], "stage": "write", "payload": change}
                pending.append(await self.topics.dlq.send(key=key, value=dlq))
                # The dedupe table already holds this fingerprint: make it forget, so the next run writes
                # the posting again instead of calling it unchanged (on the key's own partition).
                pending.append(await self.topics.parsed.send(key=key, value=rejected_event(change, rejected[key]),
                                                             partition=partition_of(key, self.settings.topic_partitions)))
            else:
                outcome = change["type"]
                written[change["runId"]][outcome].append(change["seq"])
                pending.append(await self.producer.send(changes_topic, key.encode(), dumps(change), None, None, None))
                fetched = parse_iso(change["occurredAt"])
                if fetched is not None:
                    metrics.LATENCY_SECONDS.observe((written_at - fetched).total_seconds())
            counts[(job["sourceUrl"], outcome)] += 1
        at = iso(written_at)
        for run_id in dict.fromkeys([*written, *failed]):
            event = outcomes_event(run_id, failed.get(run_id, []), at, batch=True, seqs=written.get(run_id))
            pending.append(await self.topics.progress.send(key=run_id, value=event))
        await asyncio.gather(*pending)
        metrics.count_items(counts)

    async def run(self, stream: StreamT[Any]) -> None:
        """Held across a rebalance: one batch of change events, unacked until MongoDB has it and its
        ``jobs.changes`` and outcomes are in the broker. Faust's revoke waits for it: within a write's
        deadline while the store answers, and for as long as the store is away (Faust has no way to
        hand a batch back unacked; acking it unwritten would lose it). Redelivery is safe: writes are
        by ``_id`` with the version guard, and the stats fold counts each (run, seq) once."""
        inbox = Inbox(decode_changes, self.topics.dlq, self.settings.max_items_per_feed)
        async for events in batches(stream, max(1, self.settings.batch_size // 10), within=self.settings.batch_window_seconds):
            await self.handle([change for received in await inbox.open(events) for change in received.value["items"]])
            await ack_all(stream, events)


def dumps(value: Any) -> bytes:
    """JSON as Faust's json codec writes it (orjson: compact, UTF-8), for messages sent without Faust's serializers."""
    return orjson.dumps(value)


def attach(pipeline: Pipeline, store: Store) -> None:
    sink = Sink(store, pipeline.topics, pipeline.app.producer, pipeline.settings)
    pipeline.app.agent(pipeline.source("jobs.upserts"), name="sink", concurrency=1)(sink.run)
