"""Poller agent: turn a run command into a fetched, parsed feed and one jobs.parsed event per posting.

Idempotent under redelivery: the raw payload is stored under the runId before anything is
published, so a command replayed after a crash re-parses the same bytes and republishes the same
(runId, seq) items, which the dedupe and stats agents recognise. Its store calls have the store's
deadline and are retried with back-off while MongoDB is away (each is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
from bson import Binary
from faust.types import StreamT
from pymongo.errors import DuplicateKeyError

from agents import metrics
from agents.fetch import FetchError, FetchResult, Validators, fetch_feed
from models.feed import FeedError, ItemFailure, ParsedFeed, parse_feed
from models.postings import posting_json
from models.runs import iso
from streams.app import Pipeline, ack_all, batches
from streams.store import Store, until_reachable

logger = logging.getLogger(__name__)

COMMANDS_AT_ONCE = 4
MAX_RAW_STORED = 15 * 1024 * 1024  # below MongoDB's 16 MiB document limit


def attach(pipeline: Pipeline, store: Store, session: Callable[[], aiohttp.ClientSession]) -> None:
    settings = pipeline.settings
    topics = pipeline.topics
    now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731

    async def progress(run_id: str, event: dict[str, Any]) -> None:
        """Progress is awaited until the broker has it: the stats agent must not miss a step."""
        await (await topics.progress.send(key=run_id, value={"runId": run_id, "at": iso(now()), **event}))

    async def repair(command: dict[str, Any]) -> None:
        """Republish the listed items of a run from its stored payload (see agents/stats.py)."""
        fetched = await stored_payload(command["runId"])
        if fetched is None:
            logger.error("cannot repair run_id=%s: its raw payload is gone", command["runId"])
            return
        feed = await asyncio.get_running_loop().run_in_executor(None, parse_feed, fetched.body, command["sourceUrl"],
                                                                command.get("sourceName", ""))
        await publish_items(command, feed, set(command["repairSeqs"]))

    async def run_import(command: dict[str, Any]) -> None:
        if command.get("repairSeqs"):
            await repair(command)
            return
        run_id, url = command["runId"], command["sourceUrl"]
        await progress(run_id, {"type": "started", **{k: command[k] for k in ("sourceUrl", "sourceName", "trigger", "requestedAt")}})
        try:
            fetched = await load_payload(command)
        except FetchError as exc:
            logger.warning("run failed run_id=%s url=%s error=%s", run_id, url, exc)
            await progress(run_id, {"type": "failed", "error": f"fetch failed: {exc}", "meta": {"httpStatus": exc.http_status}})
            return
        meta: dict[str, Any] = {"httpStatus": fetched.http_status, "bytes": len(fetched.body), "notModified": fetched.not_modified,
                                "attempts": fetched.attempts}
        if fetched.not_modified:
            await progress(run_id, {"type": "fetched", "totalFetched": 0, "failures": [], "meta": meta})
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            feed: ParsedFeed = await loop.run_in_executor(None, parse_feed, fetched.body, url, command.get("sourceName", ""))
        except FeedError as exc:
            logger.warning("run failed run_id=%s url=%s error=%s", run_id, url, exc)
            await progress(run_id, {"type": "failed", "error": str(exc), "meta": meta})
            return
        finally:
            metrics.PARSE_SECONDS.observe(time.perf_counter() - started)
        await publish(command, feed, meta)

    async def publish(command: dict[str, Any], feed: ParsedFeed, meta: dict[str, Any]) -> None:
        run_id, url = command["runId"], command["sourceUrl"]
        failures = [
            {"seq": seq, "key": item.key, "reason": item.reason, "stage": item.stage}
            for seq, item in enumerate(feed.items)
            if isinstance(item, ItemFailure)
        ]
        meta = {**meta, "feedKind": feed.kind, "feedTitle": feed.title}
        await progress(run_id, {"type": "fetched", "totalFetched": len(feed.items), "failures": failures, "meta": meta})
        metrics.ITEMS.labels(feed=url, outcome="failed").inc(len(failures))
        await publish_items(command, feed, None)

    async def publish_items(command: dict[str, Any], feed: ParsedFeed, only: set[int] | None) -> None:
        """One jobs.parsed event per posting (or per listed posting), awaited until the broker has them all."""
        run_id, url = command["runId"], command["sourceUrl"]
        fetched_at = iso(now())
        pending: list[Awaitable[Any]] = []
        for seq, item in enumerate(feed.items):
            if isinstance(item, ItemFailure) or (only is not None and seq not in only):
                continue
            value = {**posting_json(item), "runId": run_id, "seq": seq, "fetchedAt": fetched_at}
            pending.append(await topics.parsed.send(key=item.dedupe_key, value=value))
        await asyncio.gather(*pending)
        metrics.ITEMS_PARSED.labels(feed=url).inc(len(pending))
        logger.info("published run_id=%s url=%s items=%d%s", run_id, url, len(pending), " (repair)" if only is not None else "")

    async def stored_payload(run_id: str) -> FetchResult | None:
        stored = await until_reachable(partial(store.raw_feeds.find_one, {"_id": run_id}), f"run {run_id}")
        if stored is None:
            return None
        logger.info("replaying stored payload run_id=%s", run_id)
        return FetchResult(int(stored["httpStatus"]), zlib.decompress(stored["payload"]), Validators(), 0)

    async def load_payload(command: dict[str, Any]) -> FetchResult:
        """The stored payload of a replayed run, else a fresh conditional fetch (stored before use)."""
        run_id, url = command["runId"], command["sourceUrl"]
        stored = await stored_payload(run_id)
        if stored is not None:
            return stored
        state = await until_reachable(partial(store.fetch_state.find_one, {"sourceUrl": url}), f"run {run_id}") or {}
        started = time.perf_counter()
        try:
            result = await fetch_feed(
                session(), url,
                validators=Validators(state.get("etag"), state.get("lastModified")),
                timeout_seconds=settings.fetch_timeout_seconds,
                max_bytes=settings.max_feed_bytes,
            )
        finally:
            metrics.FETCH_SECONDS.observe(time.perf_counter() - started)
        if result.not_modified:
            return result
        compressed = zlib.compress(result.body, 6)
        if len(compressed) <= MAX_RAW_STORED:
            raw = {"_id": run_id, "runId": run_id, "sourceUrl": url, "fetchedAt": now(), "httpStatus": result.http_status,
                   "bytes": len(result.body), "encoding": "zlib", "payload": Binary(compressed)}
            with contextlib.suppress(DuplicateKeyError):  # stored by an earlier delivery (or try) of this command
                await until_reachable(partial(store.write, partial(store.raw_feeds.insert_one, raw)), f"run {run_id}")
        else:
            logger.warning("raw payload too large to keep run_id=%s compressed_bytes=%d", run_id, len(compressed))
        # Validators are remembered only after the payload is safe, so a crash cannot turn into a 304.
        validators = {"etag": result.validators.etag, "lastModified": result.validators.last_modified, "updatedAt": now()}
        await until_reachable(partial(store.write, partial(store.fetch_state.update_one, {"sourceUrl": url},
                                                           {"$set": validators}, upsert=True)), f"run {run_id}")
        return result

    async def poll(stream: StreamT[Any]) -> None:
        """A few commands at a time run concurrently; each is acked only once its run is published."""
        async for events in batches(stream, COMMANDS_AT_ONCE, within=0.1):
            results = await asyncio.gather(*(run_import(event.value) for event in events), return_exceptions=True)
            for event, result in zip(events, results, strict=True):
                if isinstance(result, Exception):
                    # A bug or an outage outlasting the retries: the run ends failed, the pipeline goes on.
                    logger.error("run crashed run_id=%s error=%r", event.value.get("runId"), result, exc_info=result)
                    await progress(event.value["runId"], {"type": "failed", "error": f"internal error: {result!r}"})
            await ack_all(stream, events)

    pipeline.app.agent(pipeline.topics.commands, name="poller", concurrency=1)(poll)
