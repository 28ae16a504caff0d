"""``POST /api/feeds/preview``: fetch a feed under the egress policy and parse it as a run would, writing nothing.

The parse runs in the API's own parse process (``agents.parsing.ParserPool``: the worker's code path,
with its deadline, item cap, memory limit and DTD refusal), never on the API's event loop. Nothing
is stored and nothing is sent to Kafka: no run, no raw payload, no table, no topic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.fetch import FetchError, Validators, fetch_feed
from agents.parsing import ParseFailed, ParserPool, PoolClosed
from models.egress import EgressPolicy
from models.feed import FeedError
from models.feedstream import FeedSummary, Row
from models.runs import clip
from streams.settings import Settings

logger = logging.getLogger(__name__)

PREVIEW_ITEMS = 20  # postings shown (SPEC §5)
PREVIEW_PROCESSES = 1  # parse processes of the API: previews are rare, and the worker needs the cores


class PreviewFailed(Exception):
    """The feed could not be fetched or parsed at all; ``str()`` says why (for a 422)."""


@dataclass
class PreviewCollector:
    """The first postings and failures of a parse, and how many items it read: pure, fed chunk by chunk."""

    max_items: int = PREVIEW_ITEMS
    max_failures: int = PREVIEW_ITEMS
    items: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            if len(row) == 3:
                if len(self.items) < self.max_items:
                    posting = orjson.loads(row[1])
                    posting.pop("seq", None)
                    self.items.append(posting)
            else:
                seq, key, reason, stage = row
                self.failed += 1
                if len(self.failures) < self.max_failures:
                    self.failures.append({"seq": seq, "key": clip(key), "reason": clip(reason), "stage": stage})

    def result(self, format_: str, summary: FeedSummary | None, handed_out: int, error: str | None) -> dict[str, Any]:
        """The response body; a parse cut short counts one failed item for the unread rest, as a run does."""
        stopped = error if error is not None else (summary.stopped if summary is not None else None)
        total = handed_out + (1 if stopped is not None else 0)
        failed = self.failed + (1 if stopped is not None else 0)
        return {"format": summary.kind if summary is not None and summary.kind else format_,
                "title": summary.title if summary is not None else "",
                "totalFetched": total, "items": self.items, "failures": self.failures,
                "failedCount": failed, "failuresTruncated": failed > len(self.failures), "error": stopped}


def preview_pool(settings: Settings) -> ParserPool:
    """The API's parse processes, with the worker's limits (started on the first preview)."""
    return ParserPool(processes=PREVIEW_PROCESSES, timeout_seconds=settings.parse_timeout_seconds,
                      max_items=settings.max_items_per_feed, max_posting_bytes=settings.max_posting_bytes,
                      partitions=1, max_memory_mb=settings.parse_max_memory_mb)


async def preview_feed(
    settings: Settings, parsers: ParserPool, url: str, name: str, *, format_: str, mapping: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Fetch ``url`` (unconditionally) and parse it with ``format_``/``mapping``; PreviewFailed when nothing could be read.

    ``format_`` and ``mapping`` select how the items are read, as for a run (``ParserPool.parse``).
    """
    policy = EgressPolicy.from_settings(settings.fetch_allow_networks, settings.fetch_allow_ports)
    try:
        fetched = await fetch_feed(url, policy=policy, validators=Validators(), timeout_seconds=settings.fetch_timeout_seconds,
                                   max_bytes=settings.max_feed_bytes)
    except FetchError as exc:
        raise PreviewFailed(f"fetch failed: {exc}") from None
    collector = PreviewCollector()
    summary: FeedSummary | None = None
    try:
        async with parsers.parse(fetched.body, url, name, feed_format=format_, mapping=mapping) as job:
            async for rows in job:
                collector.add(rows)
            summary = job.summary
            handed_out = job.handed_out
    except FeedError as exc:
        raise PreviewFailed(f"not readable as a feed: {exc}") from None
    except PoolClosed:
        raise
    except ParseFailed as exc:
        if not exc.handed_out:
            raise PreviewFailed(str(exc)) from None
        logger.info("preview cut short url=%s items=%d reason=%s", url, exc.handed_out, exc)
        return collector.result(format_, None, exc.handed_out, str(exc))
    logger.info("preview url=%s bytes=%d items=%d", url, len(fetched.body), handed_out)
    return collector.result(format_, summary, handed_out, None)
