"""Dedupe agent: classify each posting of a ``jobs.parsed`` envelope with the keyed table, no MongoDB read.

Created/updated postings go on to the sink as one ``jobs.upserts`` envelope per input envelope (same
partition); unchanged ones stop here and are only counted, and cost no table write (see
``models/dedupe.py`` for how a redelivery is still recognised). Events are acked after everything
they caused reached the broker. A ``rejected`` event (from the sink, when MongoDB refused a posting)
makes the table forget that fingerprint, so the posting is not called ``unchanged`` by the next run
while MongoDB does not hold it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
import orjson
from faust.types import StreamT

from agents import metrics
from agents.inbox import Inbox, Received
from models.dedupe import classify, forget_rejected
from models.messages import PostingsEnvelope, Rejected, decode_parsed
from models.postings import change_event
from models.runs import iso, outcomes_event, parse_iso, utc_now
from streams.app import Pipeline, Topics, ack_all
from streams.faust_internals import ChangelogAcks, batches, partition_db, set_current_event
from streams.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Dedupe:
    """The dedupe step with its dependencies: the table (read and written only here), topics, settings."""

    table: faust.Table[str, bytes]  # values: the JSON of a models.dedupe state (see streams.app)
    topics: Topics
    settings: Settings
    clock: Callable[[], datetime] = field(default=utc_now)
    changelog: ChangelogAcks | None = None  # set by attach(): the table's changelog records awaited before an ack

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The key's table value: one store read (``table.get`` reads twice: a membership test, then the value)."""
        try:
            value = self.table.data[key]
        except KeyError:
            return None
        return orjson.loads(value)  # type: ignore[no-any-return]

    def reader(self, partition: int) -> Callable[[str], dict[str, Any] | None]:
        """``lookup`` for the keys of one partition (an envelope's): on RocksDB, a read of that partition's database.

        Faust's read path (key codec, current event, an LRU key index behind a lock, value codec) cost
        more than the read (py-spy: a tenth of a worker in a re-import). The key is stored as Faust's
        json key codec writes it; the value as written (raw bytes). Other stores take ``lookup``.
        """
        db = partition_db(self.table, partition)
        if db is None:
            return self.lookup
        get, loads, dumps = db.get, orjson.loads, orjson.dumps

        def read(key: str) -> dict[str, Any] | None:
            value = get(dumps(key))
            return None if value is None else loads(value)

        return read

    def remember(self, key: str, state: dict[str, Any]) -> None:
        """Write the key's table value (and so its changelog record)."""
        self.table[key] = orjson.dumps(state)

    def classify_envelope(
        self, envelope: PostingsEnvelope, offset: int, unchanged: dict[str, list[int]], counts: Counter[tuple[str, str]],
        partition: int = 0,
    ) -> list[dict[str, Any]]:
        """The change events of one envelope's postings (at ``offset`` of ``partition``); the seqs of unchanged ones
        are added to ``unchanged`` (by run) and counted by feed (the sink counts the others once written)."""
        run_id, fetched_at = envelope["runId"], envelope["fetchedAt"]
        seen_at = parse_iso(envelope.get("sourceAt") or fetched_at)  # the payload's fetch: older content never wins
        lookup = self.reader(partition)
        changes = []
        unchanged_seqs = unchanged[run_id]
        superseded = 0
        for index, item in enumerate(envelope["items"]):
            key = item["dedupeKey"]
            result = classify(lookup(key), item["fingerprint"], run_id, item["seq"], (offset, index), seen_at)
            if result.state is not None:
                self.remember(key, result.state)
            superseded += result.superseded
            if result.outcome == "unchanged":
                unchanged_seqs.append(item["seq"])
                counts[(item["sourceUrl"], "unchanged")] += 1
            else:
                changes.append(change_event({**item, "runId": run_id}, result.outcome, result.version, fetched_at))
        if superseded:
            logger.info("postings of an older payload left as stored (a newer version is there) run_id=%s count=%d",
                        run_id, superseded)
        return changes

    def forget(self, rejected: Rejected) -> None:
        key = rejected["dedupeKey"]
        forgotten = forget_rejected(self.lookup(key), rejected["fingerprint"], rejected.get("version"))
        if forgotten is not None:
            self.remember(key, forgotten)
            logger.info("dedupe entry forgets a fingerprint MongoDB rejected key=%s run_id=%s seq=%s",
                        key, rejected.get("runId"), rejected.get("seq"))

    async def handle(self, events: list[Received[PostingsEnvelope | Rejected]]) -> None:
        """Classify a batch of envelopes and publish what they caused; returns once the broker has it all."""
        pending: list[Awaitable[Any]] = []
        unchanged: dict[str, list[int]] = defaultdict(list)
        counts: Counter[tuple[str, str]] = Counter()
        for event in events:
            value = event.value
            set_current_event(event.event)  # the table writes below go to this envelope's (= the keys') partition
            if value["type"] == "rejected":
                self.forget(value)
                continue
            changes = self.classify_envelope(value, event.message.offset, unchanged, counts, event.message.partition)
            if changes:
                pending.append(await self.topics.upserts.send(key=value["runId"], value={"type": "changes", "items": changes},
                                                              partition=event.message.partition))
        at = iso(self.clock())
        for run_id, seqs in unchanged.items():
            if seqs:
                pending.append(await self.topics.progress.send(key=run_id, value=outcomes_event(run_id, [], at, seqs={"unchanged": seqs})))
        await asyncio.gather(*pending)
        if self.changelog is not None:
            await self.changelog.wait()  # the table's state is in the broker before the envelopes are acked
        metrics.count_items(counts)

    async def run(self, stream: StreamT[Any]) -> None:
        """Held across a rebalance: one batch of envelopes, unacked until its upserts and outcomes are in the
        broker. Faust's revoke waits for it; ``handle`` awaits only the producer, which a rebalance does not
        pause, so that wait ends. A batch cut by a crash is redelivered, and the table (written through its
        changelog before the ack) gives each redelivered posting its first outcome again."""
        inbox = Inbox(decode_parsed, self.topics.dlq, self.settings.max_items_per_feed)
        async for events in batches(stream, max(1, self.settings.batch_size // 50), within=min(self.settings.batch_window_seconds, 0.5)):
            await self.handle(await inbox.open(events))
            await ack_all(stream, events)


def attach(pipeline: Pipeline) -> None:
    dedupe = Dedupe(pipeline.dedupe_table, pipeline.topics, pipeline.settings, changelog=ChangelogAcks(pipeline.dedupe_table))
    pipeline.app.agent(pipeline.source("jobs.parsed"), name="dedupe", concurrency=1)(dedupe.run)
