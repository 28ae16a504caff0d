"""The latest run of each feed for ``GET /api/feeds``: one query where the store can answer it, not one per feed.

MongoDB answers it in one aggregation: ``$sort`` on the index ``{sourceUrl, requestedAt, runId}`` then
``$group`` with ``$first``, which it runs as a scan of one index entry per feed (DISTINCT_SCAN). There is
no ``$match`` on the listed URLs: 10,000 URLs of up to 2,000 characters would pass the 16 MB command limit.
FerretDB 1.24 (the local stack) implements no ``$first`` (nor ``$max``, ``$top`` or ``$lookup``): there the
first refusal is remembered and each feed's run is one indexed ``find_one``, a bounded number at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

logger = logging.getLogger(__name__)

Document = dict[str, Any]
RUN_FIELDS = ("runId", "status", "startedAt", "finishedAt", "requestedAt")
# The runs list's order (api.queries.RUNS_ORDER), led by the feed: the index import_logs has for it.
NEWEST_FIRST = [("requestedAt", -1), ("runId", -1)]
NOT_IMPLEMENTED = 238  # MongoDB's code for an operator the server does not have (FerretDB uses it too)
FALLBACK_CONCURRENCY = 16


def latest_runs_pipeline() -> list[Document]:
    """Per feed, the fields of its newest run in the runs list's order (requestedAt, then runId, descending)."""
    return [
        {"$sort": {"sourceUrl": 1, "requestedAt": -1, "runId": -1}},
        {"$group": {"_id": "$sourceUrl", **{name: {"$first": f"${name}"} for name in RUN_FIELDS}}},
    ]


class LastRuns:
    """Remembers whether the store has ``$first``, so a store without it costs one refused command per process."""

    def __init__(self) -> None:
        self.grouping: bool | None = None  # unknown until the first listing

    async def of(self, import_logs: AsyncCollection[Document], urls: Sequence[str]) -> dict[str, Document]:
        """The newest run of each of ``urls`` that has one, by URL (``_id`` left out)."""
        if not urls:
            return {}
        if self.grouping is not False:
            try:
                wanted = set(urls)
                runs = {doc["_id"]: {k: doc.get(k) for k in RUN_FIELDS}
                        async for doc in await import_logs.aggregate(latest_runs_pipeline()) if doc["_id"] in wanted}
            except OperationFailure as exc:
                if exc.code != NOT_IMPLEMENTED:
                    raise
                logger.info("the store has no $group $first (%s): a feed's latest run is read feed by feed",
                            exc.details.get("errmsg") if exc.details else exc)
                self.grouping = False
            else:
                self.grouping = True
                return runs
        return await self._one_by_one(import_logs, urls)

    async def _one_by_one(self, import_logs: AsyncCollection[Document], urls: Sequence[str]) -> dict[str, Document]:
        gate = asyncio.Semaphore(FALLBACK_CONCURRENCY)
        projection = {"_id": 0, **{name: 1 for name in RUN_FIELDS}}

        async def latest(url: str) -> Document | None:
            async with gate:
                found: Document | None = await import_logs.find_one({"sourceUrl": url}, projection, sort=NEWEST_FIRST)
                return found

        found = await asyncio.gather(*(latest(url) for url in urls))
        return {url: run for url, run in zip(urls, found, strict=True) if run is not None}
