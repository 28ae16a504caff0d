"""MongoDB access shared by the worker and the API: collections, indexes, and the few queries both need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from streams.settings import Settings

logger = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")
RETRY_MAX_SECONDS = 30.0


async def until_reachable(
    operation: Callable[[], Awaitable[T]],
    what: str,
    errors: tuple[type[Exception], ...] = (ConnectionFailure,),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation`` until MongoDB answers, backing off up to 30 s: callers hold their work, never drop it."""
    delay = 0.5
    while True:
        try:
            return await operation()
        except errors as exc:
            logger.warning("MongoDB unreachable, %s held error=%s retry_in=%.1fs", what, exc, delay)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


class Store:
    """One client per process; collections by their SPEC §3 names."""

    def __init__(self, settings: Settings) -> None:
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000, connect=False
        )
        self.db: AsyncDatabase[Document] = self.client[settings.mongo_db]
        self.jobs: AsyncCollection[Document] = self.db["jobs"]
        self.import_logs: AsyncCollection[Document] = self.db["import_logs"]
        self.raw_feeds: AsyncCollection[Document] = self.db["raw_feeds"]
        self.feeds: AsyncCollection[Document] = self.db["feeds"]
        self.fetch_state: AsyncCollection[Document] = self.db["fetch_state"]

    async def ensure_indexes(self) -> None:
        """Idempotent; run at start-up by every process that writes."""
        await self.jobs.create_index("dedupeKey", unique=True)
        await self.jobs.create_index([("sourceUrl", ASCENDING), ("publishedAt", DESCENDING)])
        await self.jobs.create_index([("updatedAt", DESCENDING)])
        await self.import_logs.create_index("runId", unique=True)
        await self.import_logs.create_index([("startedAt", DESCENDING)])
        await self.import_logs.create_index([("sourceUrl", ASCENDING), ("startedAt", DESCENDING)])
        await self.import_logs.create_index([("status", ASCENDING), ("startedAt", DESCENDING)])
        await self.import_logs.create_index([("requestedAt", DESCENDING)])
        await self.import_logs.create_index([("sourceUrl", ASCENDING), ("requestedAt", DESCENDING)])
        await self.raw_feeds.create_index("runId", unique=True)
        await self.raw_feeds.create_index([("fetchedAt", ASCENDING)])
        await self.feeds.create_index("url", unique=True)
        await self.fetch_state.create_index("sourceUrl", unique=True)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()

    async def seed_feeds(self, entries: list[Any], now: Any) -> int:
        """Add the feeds of FEEDS_FILE that the registry does not know; never re-enable a disabled one."""
        added = 0
        for entry in entries:
            result = await self.feeds.update_one(
                {"url": entry.url},
                {"$setOnInsert": {"url": entry.url, "name": entry.name, "enabled": entry.enabled, "createdAt": now}},
                upsert=True,
            )
            added += result.upserted_id is not None
        return added

    async def enabled_feeds(self) -> list[Document]:
        return [doc async for doc in self.feeds.find({"enabled": True}).sort("createdAt", ASCENDING)]

    async def active_sources(self) -> set[str]:
        """Feeds with a run still pending or running: the scheduler does not start them again."""
        return set(await self.import_logs.distinct("sourceUrl", {"status": {"$in": ["pending", "running"]}}))
