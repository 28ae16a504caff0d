"""Poller agent: turn a run command into a fetched, parsed feed and jobs.parsed envelopes of its postings.

Idempotent under redelivery: the raw payload is stored under the runId before anything is
published, so a command redelivered after a crash re-parses the same bytes and republishes the same
(runId, seq) items, which the dedupe and stats agents recognise.

A replay run (trigger ``replay``, ``replayOf``: SPEC §5 ``POST /api/import/replay``) fetches nothing:
it parses the payload stored under the run it replays, through the same pipeline, and leaves the
feed's conditional-GET validators alone. Its envelopes carry that payload's fetch time
(``sourceAt``), so the dedupe agent never lets its postings replace a version a newer payload made
(``models/dedupe.py``). Its store calls have the store's
deadline and are retried with back-off while MongoDB is away (each is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from bson import Binary
from faust.types import StreamT
from pymongo.errors import DuplicateKeyError

from agents import metrics
from agents.fetch import FetchError, FetchResult, RefusedError, Validators, fetch_feed
from agents.inbox import Inbox
from agents.parsing import ParseFailed, ParserPool, PoolClosed
from models.egress import EgressPolicy
from models.envelopes import pack, postings_envelope
from models.feed import FeedError
from models.feedstream import FeedSummary, Row, tail_failure
from models.messages import decode_command
from models.replay import RAW_STORED_LIMIT
from models.runs import compact_failures, iso, outcomes_event, utc_now
from streams import faust_internals
from streams.app import Pipeline, Topics, ack_all
from streams.faust_internals import batches
from streams.settings import Settings
from streams.store import Store, until_reachable

logger = logging.getLogger(__name__)

COMMANDS_AT_ONCE = 4
# Chunks of one feed sent to the broker but not yet acknowledged: the poller sends the next chunk while
# the broker acknowledges the last ones, instead of a round trip per chunk (2,000 for a 1M feed).
PUBLISH_AHEAD = 4
MAX_RAW_STORED = RAW_STORED_LIMIT  # below MongoDB's 16 MiB document limit
COMPRESS_SLICE = 4 * 1024 * 1024


class StoredFirst(Exception):  # noqa: N818 - a signal, not an error
    """Another delivery of the command stored its payload first: the run publishes that one instead."""

    def __init__(self, payload: bytes, fetched_at: str | None = None) -> None:
        super().__init__("payload stored first by another delivery")
        self.payload = payload
        self.fetched_at = fetched_at


class PayloadGone(Exception):  # noqa: N818 - the run's outcome, not a bug
    """The payload a replay run would parse is not in raw_feeds (expired, or never stored: too large)."""

    def __init__(self, replay_of: str) -> None:
        super().__init__(f"the payload of run {replay_of} is no longer stored (raw_feeds keeps payloads "
                         "RAW_FEED_RETENTION_DAYS days; one too large to keep is never stored): nothing to replay")


def compressed_within(body: bytes | bytearray, limit: int, level: int = 6) -> bytes | None:
    """``body`` zlib-compressed if that is at most ``limit`` bytes, else None, found without finishing.

    A 500 MB feed of real postings compresses to well over raw_feeds' limit: compressing all of it,
    to throw it away, cost seconds of a core before its parse could start.
    """
    compressor = zlib.compressobj(level)
    parts: list[bytes] = []
    size = 0
    with memoryview(body) as view:  # released on return: the caller frees the buffer afterwards
        for start in range(0, len(view), COMPRESS_SLICE):
            parts.append(compressor.compress(view[start:start + COMPRESS_SLICE]))
            size += len(parts[-1])
            if size > limit:
                return None
    parts.append(compressor.flush())
    return None if size + len(parts[-1]) > limit else b"".join(parts)


@dataclass
class Poller:
    """The poller step with its dependencies: the store, the parse processes, the topics, settings."""

    store: Store
    parsers: ParserPool
    topics: Topics
    settings: Settings
    now: Callable[[], datetime] = field(default=utc_now)
    policy: EgressPolicy = field(init=False)
    envelope_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.policy = EgressPolicy.from_settings(self.settings.fetch_allow_networks, self.settings.fetch_allow_ports)
        # Well below the message limit: an envelope's size is estimated, and the dedupe agent's envelope
        # of the same postings' change events is larger.
        self.envelope_bytes = self.settings.kafka_max_message_bytes // 4

    async def progress(self, run_id: str, event: dict[str, Any]) -> None:
        """Progress is awaited until the broker has it: the stats agent must not miss a step."""
        await (await self.topics.progress.send(key=run_id, value={"runId": run_id, "at": iso(self.now()), **event}))

    async def repair(self, command: Mapping[str, Any]) -> None:
        """Republish the listed items of a run from its stored payload (a replay's: the replayed run's; see agents/stats.py).

        Parsed as the run parsed it: with the format and mapping its command carries, else those kept beside the
        payload (a repair command carries none: a repaired replay reads its items with the replayed run's).
        """
        stored = await self.stored(command.get("replayOf") or command["runId"])
        if stored is None:
            logger.error("cannot repair run_id=%s: its raw payload is gone", command["runId"])
            return
        fetched, source_at, options = stored
        try:
            await self.parse_and_publish({**options, **command}, fetched.body, set(command["repairSeqs"]), source_at=source_at)
        except (FeedError, ParseFailed) as exc:
            logger.error("cannot repair run_id=%s: %s", command["runId"], exc)

    async def run_import(self, command: Mapping[str, Any]) -> None:
        if command.get("repairSeqs"):
            await self.repair(command)
            return
        run_id, url = command["runId"], command["sourceUrl"]
        replay_of = command.get("replayOf")
        await self.progress(run_id, {"type": "started", **{k: command[k] for k in ("sourceUrl", "sourceName", "trigger", "requestedAt")},
                                     **({"replayOf": replay_of} if replay_of else {})})
        try:
            fetched, kept, source_at = await self.load_payload(command)
        except PayloadGone as exc:
            logger.warning("replay failed run_id=%s url=%s error=%s", run_id, url, exc)
            await self.progress(run_id, {"type": "failed", "error": str(exc), "meta": {"replayOf": replay_of}})
            return
        except RefusedError as exc:
            logger.warning("run refused run_id=%s url=%s", run_id, url)
            await self.after_run(command, None)
            await self.progress(run_id, {"type": "failed", "error": str(exc)})  # nothing about the target's state
            return
        except FetchError as exc:
            logger.warning("run failed run_id=%s url=%s error=%s", run_id, url, exc)
            await self.after_run(command, None)
            await self.progress(run_id, {"type": "failed", "error": f"fetch failed: {exc}", "meta": {"httpStatus": exc.http_status}})
            return
        meta: dict[str, Any] = {"httpStatus": fetched.http_status, "bytes": len(fetched.body), "notModified": fetched.not_modified,
                                "attempts": fetched.attempts}
        if replay_of:
            meta.update(replayOf=replay_of, payloadFetchedAt=source_at)
        if fetched.not_modified:
            await self.progress(run_id, {"type": "fetched", "totalFetched": 0, "failures": [], "meta": meta})
            return
        try:
            try:
                summary, handed_out, waited = await self.parse_and_publish(command, fetched.body, None, kept, source_at=source_at)
            except StoredFirst as first:  # another delivery of this command kept its payload first: publish that one
                summary, handed_out, waited = await self.parse_and_publish(command, first.payload, None,
                                                                           source_at=first.fetched_at)
        except FeedError as exc:  # the document as a whole is unusable: nothing was published
            logger.warning("run failed run_id=%s url=%s error=%s", run_id, url, exc)
            await self.after_run(command, None)
            await self.progress(run_id, {"type": "failed", "error": str(exc), "meta": meta})
            return
        except ParseFailed as exc:
            summary, handed_out, waited = FeedSummary("", "", exc.handed_out, str(exc)), exc.handed_out, exc.waited
            metrics.PARSE_SECONDS.observe(waited)
            if not handed_out:
                logger.warning("run failed run_id=%s url=%s error=%s", run_id, url, exc)
                await self.after_run(command, None)
                await self.progress(run_id, {"type": "failed", "error": str(exc), "meta": {**meta, "parseSeconds": round(waited, 3)}})
                return
        # Every item is published unless the parse stopped early: only then may the next run get a 304.
        await self.after_run(command, fetched.validators if summary.stopped is None else None)
        # parseSeconds: the time the worker waited for the parser (publishing the chunks not included).
        meta = {**meta, "feedKind": summary.kind, "feedTitle": summary.title, "parseSeconds": round(waited, 3)}
        event: dict[str, Any] = {"type": "fetched", "totalFetched": handed_out, "failures": [], "meta": meta}
        if summary.stopped is not None:
            # Items before the stop were published and are kept; one failed item stands for the unread rest.
            logger.warning("run cut short run_id=%s url=%s items=%d reason=%s", run_id, url, handed_out, summary.stopped)
            event.update(totalFetched=handed_out + 1, failures=[tail_failure(handed_out, summary.stopped)], error=summary.stopped)
            metrics.ITEMS.labels(feed=metrics.feed_label(url), outcome="failed").inc()
        await self.progress(run_id, event)

    async def parse_and_publish(
        self, command: Mapping[str, Any], payload: bytes | bytearray, only: Collection[int] | None,
        kept: asyncio.Future[StoredFirst | None] | None = None, *, source_at: str | None = None,
    ) -> tuple[FeedSummary, int, float]:
        """Parse in a parse process and publish each chunk as it arrives; return the summary, items handed out
        and the seconds spent waiting for the parser.

        ``kept`` (a fresh fetch) is the payload being stored: the parse starts meanwhile, and nothing is
        published before it is done. ``source_at`` is when a stored payload was fetched (default: now, a
        fresh fetch). The command's ``format`` and ``mapping`` select how the items are read (``ParserPool.parse``).
        Raises FeedError when the feed is unusable (before any item: the document is checked first),
        ParseFailed (with ``handed_out``) when the parse did not finish, and StoredFirst
        when another delivery of the command stored its payload first (nothing was published).
        """
        run_id, url = command["runId"], command["sourceUrl"]
        fetched_at = iso(self.now())
        published = failed = 0
        unacked: deque[asyncio.Future[None]] = deque()  # chunks sent, in order, whose acks are not awaited yet
        try:
            async with self.parsers.parse(payload, url, command.get("sourceName", ""), only,
                                          feed_format=command.get("format") or "auto", mapping=command.get("mapping")) as job:
                if kept is not None and (first := await kept) is not None:
                    raise first
                if isinstance(payload, bytearray):
                    # The parse process has the whole payload now (a fresh fetch's own buffer, nothing else
                    # reads it): free it before publishing, or a 500 MB feed stays in memory until the end.
                    payload.clear()
                async for rows in job:
                    acked, sent, failures = await self.publish_rows(run_id, url, fetched_at, rows, source_at)
                    unacked.append(asyncio.ensure_future(acked))
                    published += sent
                    failed += failures
                    while len(unacked) > PUBLISH_AHEAD:
                        await unacked.popleft()
                summary = job.summary
        except asyncio.CancelledError:
            for pending in unacked:  # the worker is stopping: the command is redelivered and republished
                pending.cancel()
            unacked.clear()
            raise
        finally:
            if kept is not None and not kept.done():
                kept.cancel()  # the parse failed to start, or the worker stops: a later delivery stores it again
            # However the parse ended, what was sent is in the broker before this returns or raises: a run
            # cut short announces the items handed out as published.
            while unacked:
                await unacked.popleft()
        assert summary is not None  # noqa: S101 - the job ended with its summary or raised
        metrics.PARSE_SECONDS.observe(job.waited)
        logger.info("published run_id=%s url=%s items=%d failed=%d parse_wait_s=%.2f%s", run_id, url, published, failed,
                    job.waited, " (repair)" if only is not None else "")
        return summary, job.handed_out, job.waited

    async def publish_rows(
        self, run_id: str, url: str, fetched_at: str, rows: list[Row], source_at: str | None = None
    ) -> tuple[Awaitable[None], int, int]:
        """Send the chunk's postings as envelopes, one or more per partition (``models/envelopes.py``), and one
        outcomes event for its failed items; return what completes once the broker has them all (the next
        chunk can be sent meanwhile: the broker keeps each partition's order), and the counts."""
        pending: list[Awaitable[Any]] = []
        failures: list[dict[str, Any]] = []
        postings: list[tuple[int, bytes]] = []
        for row in rows:
            if len(row) == 3:
                _, posting, partition = row
                postings.append((partition, posting))
            else:
                seq, key, reason, stage = row
                failures.append({"seq": seq, "outcome": "failed", "key": key, "reason": reason, "stage": stage})
        for partition, items in pack(postings, self.envelope_bytes):
            envelope = postings_envelope(run_id, fetched_at, items, source_at)
            pending.append(await self.topics.parsed.send(key=run_id, value=envelope, partition=partition))
        if failures:
            event = outcomes_event(run_id, compact_failures(failures, self.settings.max_failures_kept), iso(self.now()))
            pending.append(await self.topics.progress.send(key=run_id, value=event))

        async def acked() -> None:
            await asyncio.gather(*pending)
            metrics.ITEMS_PARSED.labels(feed=metrics.feed_label(url)).inc(len(postings))
            if failures:
                metrics.ITEMS.labels(feed=metrics.feed_label(url), outcome="failed").inc(len(failures))

        return acked(), len(postings), len(failures)

    async def stored(self, run_id: str) -> tuple[FetchResult, str | None, dict[str, Any]] | None:
        """The payload stored under ``run_id``, when it was fetched (ISO), and the format and mapping it was parsed
        with (``{}`` if stored before them); None when raw_feeds has none."""
        stored = await until_reachable(partial(self.store.raw_feeds.find_one, {"_id": run_id}), f"run {run_id}")
        if stored is None:
            return None
        logger.info("reading stored payload run_id=%s", run_id)
        body = await asyncio.get_running_loop().run_in_executor(None, zlib.decompress, stored["payload"])
        fetched_at = stored.get("fetchedAt")
        options: dict[str, Any] = {key: stored[key] for key in ("format", "mapping") if key in stored}
        return (FetchResult(int(stored["httpStatus"]), body, Validators(stored.get("etag"), stored.get("lastModified")), 0),
                iso(fetched_at) if isinstance(fetched_at, datetime) else None, options)

    async def load_payload(
        self, command: Mapping[str, Any]
    ) -> tuple[FetchResult, asyncio.Future[StoredFirst | None] | None, str | None]:
        """The payload to parse, the task that keeps it, and when it was fetched (None: now).

        A replay's is the replayed run's stored payload (PayloadGone when raw_feeds no longer has it); a
        redelivered command's is its own stored payload; else a fresh conditional fetch, with the task
        (:meth:`keep_payload`) that stores it while the parse starts. The poller publishes nothing before
        that task is done (so a redelivered command finds the payload), and it answers another delivery's
        payload if that one was stored first.
        """
        run_id, url = command["runId"], command["sourceUrl"]
        replay_of = command.get("replayOf")
        if replay_of:
            replayed = await self.stored(replay_of)
            if replayed is None:
                raise PayloadGone(replay_of)
            return replayed[0], None, replayed[1]
        stored = await self.stored(run_id)
        if stored is not None:
            return stored[0], None, stored[1]
        state = await until_reachable(partial(self.store.fetch_state.find_one, {"sourceUrl": url}), f"run {run_id}") or {}
        started = time.perf_counter()
        try:
            result = await fetch_feed(
                url,
                policy=self.policy,
                validators=Validators(state.get("etag"), state.get("lastModified")),
                timeout_seconds=self.settings.fetch_timeout_seconds,
                max_bytes=self.settings.max_feed_bytes,
            )
        finally:
            elapsed = time.perf_counter() - started
            metrics.FETCH_SECONDS.observe(elapsed)
        logger.info("fetched run_id=%s url=%s status=%d bytes=%d fetch_s=%.2f", run_id, url, result.http_status,
                    len(result.body), elapsed)
        if result.not_modified:
            return result, None, None
        return result, asyncio.ensure_future(self.keep_payload(run_id, url, result, command)), None

    async def after_run(self, command: Mapping[str, Any], validators: Validators | None) -> None:
        """``validators_after`` for a run that fetched; a replay fetched nothing and leaves the feed's validators alone."""
        if not command.get("replayOf"):
            await self.validators_after(command["runId"], command["sourceUrl"], validators)

    async def validators_after(self, run_id: str, url: str, validators: Validators | None) -> None:
        """Remember the feed's ETag/Last-Modified once a run published every item; forget them after any other ending.

        Saved at fetch time, a run that then failed (a truncated body, a parse deadline, a killed parser)
        made the next request conditional: the server answered 304, the run ended "completed, 0 items",
        and the feed's postings were never imported until it changed upstream. Only a run whose payload
        is stored keeps them: a redelivered command must replay that payload, never meet a 304.
        """
        if validators is not None and (validators.etag is not None or validators.last_modified is not None):
            stored = await until_reachable(partial(self.store.raw_feeds.find_one, {"_id": run_id}, {"_id": 1}), f"run {run_id}")
            validators = validators if stored is not None else None
        if validators is None or (validators.etag is None and validators.last_modified is None):
            await until_reachable(partial(self.store.write, partial(self.store.fetch_state.delete_one, {"sourceUrl": url})),
                                  f"fetch state of {url}")
            return
        fields = {"etag": validators.etag, "lastModified": validators.last_modified, "updatedAt": self.now()}
        await until_reachable(partial(self.store.write, partial(self.store.fetch_state.update_one, {"sourceUrl": url},
                                                               {"$set": fields}, upsert=True)), f"fetch state of {url}")

    async def keep_payload(
        self, run_id: str, url: str, result: FetchResult, command: Mapping[str, Any] | None = None
    ) -> StoredFirst | None:
        """Store a fresh payload under the run (then the feed's validators); return the payload another
        delivery of the command stored first, if one did, else None."""
        started = time.perf_counter()
        # zlib releases the GIL: compressing in a thread does not stall the event loop (or the payload's
        # way to the parse processes meanwhile). It stops once the output passes what raw_feeds keeps.
        compressed = await asyncio.get_running_loop().run_in_executor(None, compressed_within, result.body, MAX_RAW_STORED)
        if compressed is None:
            # Not stored, so no validators either: after a crash the replay must fetch the whole feed
            # again, not get a 304 and end "completed, 0 items" while the items were never published.
            logger.warning("raw payload too large to keep run_id=%s bytes=%d (compressed over %d)", run_id,
                           len(result.body), MAX_RAW_STORED)
            return None
        raw = {"_id": run_id, "runId": run_id, "sourceUrl": url, "fetchedAt": self.now(), "httpStatus": result.http_status,
               "bytes": len(result.body), "encoding": "zlib", "payload": Binary(compressed),
               "etag": result.validators.etag, "lastModified": result.validators.last_modified,
               # how the run parses it: a repair republishes its items from this payload the same way
               "format": (command or {}).get("format") or "auto", "mapping": (command or {}).get("mapping")}
        try:
            await until_reachable(partial(self.store.write, partial(self.store.raw_feeds.insert_one, raw)), f"run {run_id}")
        except DuplicateKeyError:
            # An earlier delivery (or try) of this command stored its payload first: publish that one,
            # so every delivery of a run publishes the same items even if the feed changed meanwhile.
            first = await self.stored(run_id)
            if first is not None:
                return StoredFirst(bytes(first[0].body), first[1])
        # The validators go to fetch_state only once every item is published (``validators_after``).
        logger.info("payload kept run_id=%s compressed_bytes=%d keep_s=%.2f", run_id, len(compressed), time.perf_counter() - started)
        return None

    async def poll(self, stream: StreamT[Any]) -> None:
        """A few commands at a time run concurrently; each is acked only once its run is published.

        Held across a rebalance: the commands of the batch in progress, unacked until their runs are
        published (Faust's revoke waits for them; each run is bounded by its fetch and parse
        deadlines). A worker that stops abandons its runs in flight (``PoolClosed``): their commands
        stay unacked and go to the partition's next owner, which repeats the run from its stored payload.
        """
        inbox = Inbox(decode_command, self.topics.dlq, self.settings.max_items_per_feed)
        async for events in batches(stream, COMMANDS_AT_ONCE, within=0.1):
            commands = await inbox.open(events)
            results = await asyncio.gather(*(self.run_import(command.value) for command in commands), return_exceptions=True)
            # Once the pool is closed, any error is the stop's doing (a killed parse, a closed store client).
            abandoned = [command.event for command, result in zip(commands, results, strict=True)
                         if isinstance(result, PoolClosed) or (isinstance(result, Exception) and self.parsers.closed)]
            if abandoned:
                logger.warning("worker stopping: %d run(s) left to the next owner of their partitions run_ids=%s",
                               len(abandoned), [command.value["runId"] for command in commands if command.event in abandoned])
                await ack_all(stream, [event for event in events if event not in abandoned])
                # This agent acks nothing more: the stop must not wait for the commands it holds.
                faust_internals.release(stream.app.consumer, self.topics.commands.get_topic_name())
                return
            for command, result in zip(commands, results, strict=True):
                if isinstance(result, Exception):
                    # A bug or an outage outlasting the retries: the run ends failed, the pipeline goes on.
                    logger.error("run crashed run_id=%s error=%r", command.value["runId"], result, exc_info=result)
                    # The details are in the worker log; import_logs is public and gets no exception repr.
                    await self.progress(command.value["runId"], {"type": "failed", "error": "internal error (see the worker log)"})
                    await self.after_run(command.value, None)
            await ack_all(stream, events)


def attach(pipeline: Pipeline, store: Store, parsers: ParserPool) -> None:
    poller = Poller(store, parsers, pipeline.topics, pipeline.settings)
    pipeline.app.agent(pipeline.source("commands"), name="poller", concurrency=1)(poller.poll)
