"""Dedupe agent: classify each parsed posting with the keyed table, no MongoDB read.

created/updated postings go on to the sink through ``jobs.upserts``; unchanged ones stop here and
are only counted. Events are acked after everything they caused reached the broker. A ``rejected``
event (from the sink, when MongoDB refused a posting) makes the table forget that fingerprint, so
the posting is not called ``unchanged`` by the next run while MongoDB does not hold it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from faust.types import StreamT

from agents import metrics
from models.dedupe import classify, forget_rejected
from models.postings import change_event
from models.runs import iso, outcomes_event
from streams.app import Pipeline, ack_all, batches, set_current_event

logger = logging.getLogger(__name__)


def attach(pipeline: Pipeline) -> None:
    table = pipeline.dedupe_table
    topics = pipeline.topics
    settings = pipeline.settings

    def now() -> datetime:
        return datetime.now(UTC)

    async def dedupe(stream: StreamT[Any]) -> None:
        async for events in batches(stream, settings.batch_size, within=min(settings.batch_window_seconds, 0.5)):
            pending = []
            unchanged: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for event in events:
                parsed = event.value
                key = parsed["dedupeKey"]
                set_current_event(event)
                if parsed.get("type") == "rejected":
                    forgotten = forget_rejected(table.get(key), parsed["fingerprint"])
                    if forgotten is not None:
                        table[key] = forgotten
                        logger.info("dedupe entry forgets a fingerprint MongoDB rejected key=%s run_id=%s seq=%s",
                                    key, parsed.get("runId"), parsed.get("seq"))
                    continue
                result = classify(table.get(key), parsed["fingerprint"], parsed["runId"], parsed["seq"])
                if not result.replayed:
                    table[key] = result.state
                if result.outcome == "unchanged":
                    unchanged[parsed["runId"]].append({"seq": parsed["seq"], "outcome": "unchanged"})
                    metrics.ITEMS.labels(feed=metrics.feed_label(parsed["sourceUrl"]), outcome="unchanged").inc()
                else:
                    change = change_event(parsed, result.outcome, result.version, parsed["fetchedAt"])
                    pending.append(await topics.upserts.send(key=key, value=change))
            for run_id, items in unchanged.items():
                pending.append(await topics.progress.send(key=run_id, value=outcomes_event(run_id, items, iso(now()))))
            await asyncio.gather(*pending)
            await ack_all(stream, events)

    pipeline.app.agent(topics.parsed, name="dedupe", concurrency=1)(dedupe)
