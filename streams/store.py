"""MongoDB access shared by the worker and the API: collections, indexes, and the few queries both need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError
from pymongo.monitoring import CommandListener

from models.postings import search_fields
from streams.retry import Backoff, Retry, retry
from streams.settings import Settings

logger = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")
STORE_BACKOFF = Backoff(base=0.5, cap=30.0)  # no limit: work waits for the store, it is never dropped
INDEX_BUILD_SECONDS = 3600.0
DUPLICATE_KEY = 11000
MAX_TIME_EXPIRED = 50  # the server's "operation exceeded time limit" (the maxTimeMS pymongo derives from timeoutMS)


def unreachable(exc: BaseException) -> bool:
    """A connection problem or a passed deadline: the store may answer in a moment, so hold the work and retry.

    Anything else (a rejected document, a bad query) is an answer, and retrying would not change it.
    """
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, BulkWriteError):
        return exc.timeout or any(error.get("code") == MAX_TIME_EXPIRED for error in exc.details.get("writeErrors", []))
    return isinstance(exc, PyMongoError) and exc.timeout


async def until_reachable(
    operation: Callable[[], Awaitable[T]],
    what: str,
    errors: tuple[type[Exception], ...] = (),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation`` until MongoDB answers, backing off up to 30 s: callers hold their work, never drop it.

    Retried: connection failures and deadlines (``unreachable``), plus any exception in ``errors``.
    """

    def held(attempt: Retry) -> None:
        logger.warning("MongoDB unreachable, %s held error=%s retry_in=%.1fs", what, attempt.error, attempt.delay)
        if on_retry is not None:
            on_retry()

    return await retry(operation, STORE_BACKOFF, retryable=lambda exc: unreachable(exc) or isinstance(exc, errors),
                       on_retry=held)


def chunked(items: Sequence[T], size: int) -> list[tuple[int, Sequence[T]]]:
    """``items`` cut into ``(offset, chunk)`` pieces of at most ``size``: one write command each."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [(offset, items[offset:offset + size]) for offset in range(0, len(items), size)]


def remap_errors(errors: Iterable[Mapping[str, Any]], offset: int) -> list[Document]:
    """A chunk's ``writeErrors`` with ``index`` pointing into the whole list the chunk was cut from."""
    return [{**error, "index": error["index"] + offset} for error in errors]


def upsert_operation(
    filter_: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = True
) -> UpdateOne | ReplaceOne[Document]:
    """An upsert of ``update`` (an update only, with ``upsert=False``): operators (``$set``...) make an
    UpdateOne, a plain document a ReplaceOne."""
    if next(iter(update), "").startswith("$"):
        return UpdateOne(dict(filter_), dict(update), upsert=upsert)
    return ReplaceOne(dict(filter_), dict(update), upsert=upsert)


class Store:
    """One client per process; collections by their SPEC §3 names; the one write path of the worker.

    Every write goes through ``insert_unordered`` / ``bulk_upsert`` / ``find_by_ids`` / ``write``: they
    cut lists into commands of at most ``MONGO_WRITE_BATCH`` statements (FerretDB 1.24 as shipped
    wedges on an update of 100) and hold ``write_gate`` while a command is in flight, so at most
    ``MONGO_MAX_INFLIGHT_WRITES`` write commands of this process are in the store at once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_seconds: float | None = None,
        event_listeners: Sequence[CommandListener] = (),
    ) -> None:
        """``timeout_seconds`` (default ``MONGO_TIMEOUT_SECONDS``) is the deadline of each store call.

        ``event_listeners`` are pymongo command listeners (tests use them to see the commands sent).
        """
        deadline = settings.mongo_timeout_seconds if timeout_seconds is None else timeout_seconds
        # timeoutMS: every operation (server selection, pool checkout, the command round trip) has a
        # deadline; pymongo raises a timeout error, which ``unreachable`` counts as the store being away.
        # w: MONGO_WRITE_CONCERN (majority by default: a write acknowledged is on a majority of a replica
        # set's members). retryWrites: pymongo retries a write once after a network error or failover, on
        # replica sets and sharded clusters only; on a standalone server (FerretDB included) it does not,
        # and nothing breaks (``log_durability`` says which applies).
        self.write_concern = settings.write_concern
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000, connect=False,
            timeoutMS=deadline * 1000, event_listeners=list(event_listeners),
            w=self.write_concern, retryWrites=True,
        )
        self.write_batch = settings.mongo_write_batch
        self.insert_batch = settings.mongo_insert_batch
        self.write_gate = asyncio.Semaphore(settings.mongo_max_inflight_writes)
        self.db: AsyncDatabase[Document] = self.client[settings.mongo_db]
        self.jobs: AsyncCollection[Document] = self.db["jobs"]
        self.import_logs: AsyncCollection[Document] = self.db["import_logs"]
        self.raw_feeds: AsyncCollection[Document] = self.db["raw_feeds"]
        self.feeds: AsyncCollection[Document] = self.db["feeds"]
        self.fetch_state: AsyncCollection[Document] = self.db["fetch_state"]
        self.job_search: AsyncCollection[Document] = self.db["job_search"]

    async def ensure_indexes(self) -> None:
        """Idempotent; run at start-up by every process that writes.

        Besides SPEC §3's indexes, one per list the API serves: (equality fields..., sort fields...) in
        the list's sort directions, so a page is read in order and ``limit`` stops the read early.
        Jobs are listed by (publishedAt desc, _id asc), runs by (requestedAt desc, runId desc).
        """
        with pymongo.timeout(INDEX_BUILD_SECONDS):  # an index built over a full collection outlasts MONGO_TIMEOUT_SECONDS
            await self._create_indexes()

    async def _create_indexes(self) -> None:
        newest_jobs = [("publishedAt", DESCENDING), ("_id", ASCENDING)]
        newest_runs = [("requestedAt", DESCENDING), ("runId", DESCENDING)]
        await self.jobs.create_index("dedupeKey", unique=True)
        await self.jobs.create_index([("sourceUrl", ASCENDING), ("publishedAt", DESCENDING)])
        await self.jobs.create_index([("updatedAt", DESCENDING)])
        # Job lists page through job_search: jobs keeps SPEC's indexes only (each costs every write).
        # ``text`` last: a search walks the index newest first and tests each entry's text there,
        # without reading the document (10x fewer reads on the local store than without it).
        await self.job_search.create_index([*newest_jobs, ("text", ASCENDING)])
        await self.job_search.create_index([("company", ASCENDING), *newest_jobs])
        await self.job_search.create_index([("sourceUrl", ASCENDING), *newest_jobs, ("text", ASCENDING)])
        await self.import_logs.create_index("runId", unique=True)
        await self.import_logs.create_index([("startedAt", DESCENDING)])
        await self.import_logs.create_index([("sourceUrl", ASCENDING), ("startedAt", DESCENDING)])
        await self.import_logs.create_index([("status", ASCENDING), ("startedAt", DESCENDING)])
        await self.import_logs.create_index(newest_runs)
        await self.import_logs.create_index([("status", ASCENDING), *newest_runs])
        await self.import_logs.create_index([("sourceUrl", ASCENDING), *newest_runs])
        await self.raw_feeds.create_index("runId", unique=True)
        await self.raw_feeds.create_index([("fetchedAt", ASCENDING)])
        await self.raw_feeds.create_index([("sourceUrl", ASCENDING), ("fetchedAt", DESCENDING)])  # a feed's latest payload
        await self.feeds.create_index("url", unique=True)
        await self.fetch_state.create_index("sourceUrl", unique=True)

    async def log_durability(self) -> bool:
        """Log the write concern and whether the server supports retryable writes; return the latter.

        Retryable writes need a replica set or a sharded cluster with sessions (``hello`` names a
        ``setName`` or answers ``isdbgrid``, and gives ``logicalSessionTimeoutMinutes``).
        """
        hello = await self.client.admin.command("hello")
        retryable = bool((hello.get("setName") or hello.get("msg") == "isdbgrid")
                         and hello.get("logicalSessionTimeoutMinutes") is not None)
        logger.info("MongoDB writes: w=%s, retryable writes %s", self.write_concern,
                    "on" if retryable else "not supported by this server (standalone): writes are retried by "
                    "jobstream's own idempotent retries only")
        return retryable

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()

    async def seed_feeds(self, entries: list[Any], now: Any) -> int:
        """Add the feeds of FEEDS_FILE that the registry does not know; never re-enable a disabled one.

        An entry that spells out a ``format`` or ``mapping`` (SPEC §3a) sets them on its feed, registered or
        not, so a mapping fixed in the file takes effect on the next start; other entries leave them alone.
        """
        added = 0
        for entry in entries:
            read_as = {"format": entry.format, "mapping": entry.mapping}
            explicit = entry.format != "auto" or entry.mapping is not None
            update: dict[str, Any] = {"$setOnInsert": {"url": entry.url, "name": entry.name, "enabled": entry.enabled,
                                                       "createdAt": now, "lastRun": None, **({} if explicit else read_as)}}
            if explicit:
                update["$set"] = read_as
            result = await self.write(partial(self.feeds.update_one, {"url": entry.url}, update, upsert=True))
            added += result.upserted_id is not None
        return added

    async def enabled_feeds(self) -> list[Document]:
        return [doc async for doc in self.feeds.find({"enabled": True}).sort("createdAt", ASCENDING)]

    async def backfill_job_search(self, batch: int = 500) -> int:
        """Write the ``job_search`` document of every job that has none; return how many were added.

        Needed once for jobs stored before ``job_search`` existed (the API lists jobs through it).
        Skipped when the two collections hold as many documents. Jobs are read in ``_id`` order by
        keyset, and inserts never overwrite: a document the sink wrote meanwhile is newer and stays.
        """
        jobs, searchable = await asyncio.gather(self.jobs.estimated_document_count(),
                                                self.job_search.estimated_document_count())
        if searchable >= jobs:
            return 0
        logger.info("job_search backfill starting jobs=%d job_search=%d", jobs, searchable)
        added, last = 0, None
        fields = {"dedupeKey": 1, "sourceUrl": 1, "title": 1, "company": 1, "publishedAt": 1}
        while True:
            page = [doc async for doc in self.jobs.find({} if last is None else {"_id": {"$gt": last}}, fields,
                                                        sort=[("_id", ASCENDING)], limit=batch)]
            if not page:
                break
            last = page[-1]["_id"]
            errors = await self.insert_unordered(self.job_search, [search_fields(doc) for doc in page])
            added += len(page) - sum(error.get("code") == DUPLICATE_KEY for error in errors)
            if added and added % 100_000 < batch:
                logger.info("job_search backfill progress added=%d", added)
        logger.info("job_search backfill done added=%d", added)
        return added

    async def active_sources(self) -> set[str]:
        """Feeds with a run still pending or running: the scheduler does not start them again."""
        # Not ``distinct``: under a deadline pymongo adds maxTimeMS to every command, and FerretDB 1.24
        # refuses it on ``distinct`` (FailedToParse); aggregate takes it on both stores.
        busy: list[Document] = [{"$match": {"status": {"$in": ["pending", "running"]}}}, {"$group": {"_id": "$sourceUrl"}}]
        return {doc["_id"] async for doc in await self.import_logs.aggregate(busy)}

    async def last_scheduled(self, since: datetime) -> dict[str, datetime]:
        """Each feed's latest scheduled run requested at or after ``since``: the schedule is not due for them yet.

        A range on ``requestedAt`` (the runs list's index), so it reads the runs of one interval, not
        the whole collection.
        """
        recent = self.import_logs.find({"requestedAt": {"$gte": since}, "trigger": "schedule"},
                                       {"_id": 0, "sourceUrl": 1, "requestedAt": 1})
        latest: dict[str, datetime] = {}
        async for doc in recent:
            url, at = doc.get("sourceUrl"), doc.get("requestedAt")
            if isinstance(url, str) and isinstance(at, datetime) and (url not in latest or at > latest[url]):
                latest[url] = at
        return latest

    # --- the write path: small commands, a bounded number in flight -------------------------------
    #
    # Retrying any of these after a timeout or a lost connection is safe: inserts are by ``_id``
    # (a repeat is a duplicate key, which callers treat as "already written") and upserts by ``_id``
    # set the same fields again. So ``until_reachable`` may rerun a whole batch. A slow but alive
    # store does not loop forever: the deadline is per command and a command is at most
    # ``MONGO_WRITE_BATCH`` statements, so it finishes well within it.

    async def write(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run one single-statement write command (insert_one, update_one, delete_many...) inside the gate."""
        async with self.write_gate:
            return await command()

    async def insert_unordered(self, collection: AsyncCollection[Document], documents: Sequence[Document]) -> list[Document]:
        """Unordered inserts in commands of at most ``insert_batch``; return the ``writeErrors`` (``index`` into ``documents``).

        Raises what ``unreachable`` recognises (the caller retries); other errors are per document.
        """

        async def insert(offset: int, chunk: Sequence[Document]) -> list[Document]:
            try:
                await self.write(partial(collection.insert_many, chunk, ordered=False))
            except BulkWriteError as exc:
                if unreachable(exc):
                    raise
                return remap_errors(exc.details.get("writeErrors", []), offset)
            return []

        return await self._each_chunk(documents, insert, self.insert_batch)

    async def bulk_upsert(
        self, collection: AsyncCollection[Document], writes: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
        upsert: bool = True,
    ) -> list[Document]:
        """Unordered upserts of ``(filter, update or replacement)`` pairs in commands of at most ``write_batch``
        (updates of the documents that match only, with ``upsert=False``).

        Returns the ``writeErrors`` with ``index`` into ``writes``. FerretDB answers a failed update
        bulk in a shape pymongo cannot merge (KeyError): that chunk is retried one upsert at a time
        (upserts are idempotent) to find the culprits.
        """

        async def write_chunk(offset: int, chunk: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[Document]:
            operations = [upsert_operation(filter_, update, upsert) for filter_, update in chunk]
            try:
                await self.write(partial(collection.bulk_write, operations, ordered=False))
                return []
            except BulkWriteError as exc:
                if unreachable(exc):
                    raise
                return remap_errors(exc.details.get("writeErrors", []), offset)
            except (PyMongoError, KeyError) as exc:
                if unreachable(exc):
                    raise
                logger.warning("bulk upsert into %s failed as a whole (%r); retrying %d upserts one by one",
                               collection.name, exc, len(operations))
            errors: list[Document] = []
            for index, (filter_, update) in enumerate(chunk, start=offset):
                try:
                    await self._upsert_one(collection, filter_, update, upsert)
                except PyMongoError as item_exc:
                    if unreachable(item_exc):
                        raise
                    code = item_exc.code if isinstance(item_exc, OperationFailure) else None
                    errors.append({"index": index, "code": code, "errmsg": str(item_exc)})
            return errors

        return await self._each_chunk(writes, write_chunk)

    async def find_by_ids(
        self, collection: AsyncCollection[Document], ids: Sequence[Any], projection: Mapping[str, Any] | None = None
    ) -> list[Document]:
        """The documents whose ``_id`` is in ``ids``: one ``$in`` read per ``write_batch`` ids, inside the gate."""

        async def find(_offset: int, chunk: Sequence[Any]) -> list[Document]:
            async with self.write_gate:
                return [doc async for doc in collection.find({"_id": {"$in": list(chunk)}}, projection)]

        return await self._each_chunk(ids, find)

    async def _upsert_one(
        self, collection: AsyncCollection[Document], filter_: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = True
    ) -> None:
        if isinstance(upsert_operation(filter_, update), UpdateOne):
            await self.write(partial(collection.update_one, dict(filter_), dict(update), upsert=upsert))
        else:
            await self.write(partial(collection.replace_one, dict(filter_), dict(update), upsert=upsert))

    async def _each_chunk(
        self, items: Sequence[T], command: Callable[[int, Sequence[T]], Awaitable[list[Document]]], size: int | None = None
    ) -> list[Document]:
        """Run ``command(offset, chunk)`` for every chunk at once (the gate bounds how many reach the store).

        The first failure cancels the other chunks and is raised as it is (not as an ExceptionGroup),
        so callers and ``until_reachable`` see the pymongo error.
        """
        tasks = [asyncio.ensure_future(command(offset, chunk)) for offset, chunk in chunked(items, size or self.write_batch)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [row for rows in results for row in rows]
