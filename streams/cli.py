"""The ``jobstream`` command: ``worker``, ``api``, ``import URL...``, ``replay RUN_ID``, ``preview URL``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.preview import PreviewFailed, preview_feed, preview_pool
from models.formats import DEFAULT_FORMAT, FORMATS, format_problem
from models.registry import FeedEntry, RegistryError, entry_from, entry_of, parse_feeds_file
from models.replay import missing_payload_reason, replayed_run
from models.runs import FINISHED
from streams.commands import Send, aiokafka_sender, producer_for, request_replay, request_runs
from streams.settings import Settings, SettingsError
from streams.store import Store
from streams.topics import ensure_topics

logger = logging.getLogger(__name__)
BAR_WIDTH = 24


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    if os.environ.get("DEVLOG"):  # mode's developer log (Faust's seeks, drops, skips): keep it visible
        return
    for noisy in ("aiokafka", "faust.transport", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def progress_line(run: dict[str, Any]) -> str:
    """One line per run: a bar of accounted items, the counters, and the error if any."""
    total = int(run.get("totalFetched") or 0)
    done = sum(int(run.get(k) or 0) for k in ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs"))
    ratio = 1.0 if run.get("status") in FINISHED else (done / total if total else 0.0)
    filled = round(ratio * BAR_WIDTH)
    line = (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {ratio:4.0%} {run.get('status', 'pending'):9} "
        f"{run.get('sourceUrl', '')}  fetched={total} new={run.get('newJobs', 0)} updated={run.get('updatedJobs', 0)} "
        f"unchanged={run.get('unchangedJobs', 0)} failed={run.get('failedJobs', 0)}"
    )
    if run.get("error"):
        line += f"  error: {run['error']}"
    return line


async def import_feeds(settings: Settings, feeds: Sequence[FeedEntry], timeout: float, out: TextIO) -> dict[str, dict[str, Any]]:
    """Request one run per feed and follow them on ``import.logs`` until all are finished (or timeout).

    Returns the last snapshot of each run by runId.
    """
    return await follow_runs(settings, lambda send: request_runs(send, settings, feeds, "cli"), timeout, out)


class ReplayRefused(Exception):
    """The replay cannot start; ``str()`` says why (as the API's 404/409 would)."""


async def replay_request(settings: Settings, run_id: str) -> tuple[FeedEntry, str]:
    """The feed and the run whose payload a replay of ``run_id`` parses, checked as ``POST /api/import/replay`` does."""
    store = Store(settings)
    try:
        run = await store.import_logs.find_one({"runId": run_id}, {"_id": 0, "failures": 0})
        if run is None:
            raise ReplayRefused(f"no import run {run_id!r}")
        replay_of = replayed_run(run)
        if await store.raw_feeds.find_one({"_id": replay_of}, {"_id": 1}) is None:
            raise ReplayRefused(missing_payload_reason(run, datetime.now(UTC), settings.raw_feed_retention_days))
        url = str(run["sourceUrl"])
        if url in await store.active_sources():
            raise ReplayRefused(f"a run of {url} is pending or running: replay it once that run has finished")
        registered = await store.feeds.find_one({"url": url})  # a replay reads with the feed's current format and mapping
        if registered is not None:
            return replace(entry_of(registered), name=str(registered.get("name") or run.get("sourceName") or url)), replay_of
        return FeedEntry(url, str(run.get("sourceName") or url)), replay_of
    finally:
        await store.close()


async def replay_runs(settings: Settings, run_id: str, timeout: float, out: TextIO) -> dict[str, dict[str, Any]]:
    """Request a replay of ``run_id``'s stored payload and follow it like ``import_feeds``; ReplayRefused when it cannot."""
    feed, replay_of = await replay_request(settings, run_id)

    async def request(send: Send) -> list[dict[str, Any]]:
        return [await request_replay(send, settings, feed, replay_of)]

    return await follow_runs(settings, request, timeout, out)


async def follow_runs(
    settings: Settings, request: Callable[[Send], Awaitable[list[dict[str, Any]]]], timeout: float, out: TextIO
) -> dict[str, dict[str, Any]]:
    """Send the commands ``request`` makes and follow their runs on ``import.logs`` until all are finished (or timeout)."""
    await ensure_topics(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    producer = producer_for(settings)
    await producer.start()
    try:
        topic = settings.topic("import.logs")
        partitions = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before our runs can produce anything
            await consumer.position(tp)
        commands = await request(aiokafka_sender(producer))
        runs: dict[str, dict[str, Any]] = {c["runId"]: {**c, "status": "pending"} for c in commands}
        for command in commands:
            print(f"requested run {command['runId']} for {command['sourceUrl']}", file=out, flush=True)
        deadline = time.monotonic() + timeout
        last_print = 0.0
        while any(run["status"] not in FINISHED for run in runs.values()) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            changed = False
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    snapshot = json.loads(record.value)
                    if snapshot.get("runId") in runs:
                        runs[snapshot["runId"]] = snapshot
                        changed = True
            if changed and time.monotonic() - last_print > 0.5 or all(r["status"] in FINISHED for r in runs.values()):
                for run in runs.values():
                    print(progress_line(run), file=out, flush=True)
                last_print = time.monotonic()
    finally:
        await producer.stop()
        await consumer.stop()
    return runs


def preview_table(preview: dict[str, Any], out: TextIO) -> None:
    """The preview as the terminal shows it: a summary line, one line per posting, then the failures."""
    print(f"format={preview['format']} items={preview['totalFetched']} failed={preview['failedCount']} "
          f"title={preview['title']!r}", file=out)
    rows = [(item["title"], item["company"], item["location"], item["publishedAt"] or "", item["externalId"])
            for item in preview["items"]]
    header = ("TITLE", "COMPANY", "LOCATION", "PUBLISHED", "ID")
    widths = [min(40, max([len(header[i]), *(len(str(row[i])) for row in rows)])) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell)[:width].ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    if preview["error"]:
        print(f"stopped early: {preview['error']}", file=out)
    for failure in preview["failures"]:
        print(f"failed item {failure['seq']} {failure['key']}: {failure['reason']} ({failure['stage']})", file=out)


async def preview(settings: Settings, url: str, format_: str, mapping: dict[str, Any] | None) -> dict[str, Any]:
    """Fetch and parse ``url`` here as ``POST /api/feeds/preview`` does (a parse process, the worker's limits); writes nothing."""
    parsers = preview_pool(settings)
    try:
        return await preview_feed(settings, parsers, url, entry_from(url).name, format_=format_, mapping=mapping)
    finally:
        await parsers.close()


def read_mapping(path: Path) -> dict[str, Any]:
    """A mapping file: JSON, or YAML for a .yaml/.yml name; RegistryError when it is not an object."""
    text = path.read_text(encoding="utf-8")
    try:
        value = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RegistryError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{path}: a mapping is an object")
    return value


def report(runs: dict[str, dict[str, Any]], timeout: float, out: TextIO) -> int:
    """Name what did not complete; the exit code is 0 only when every run completed."""
    unfinished = [r for r in runs.values() if r["status"] not in FINISHED]
    not_completed = [r for r in runs.values() if r["status"] != "completed"]
    for run in unfinished:
        print(f"timed out after {timeout:g}s waiting for {run['sourceUrl']} (run {run['runId']})", file=out)
    for run in not_completed:
        if run not in unfinished:
            print(f"run {run['runId']} {run['status']}: {run['sourceUrl']}: {run.get('error') or ''}"
                  f" {len(run.get('failures') or [])} failure(s) recorded", file=out)
    print(f"{len(runs) - len(not_completed)} of {len(runs)} runs completed", file=out)
    return 0 if not not_completed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobstream", description="Job-feed ingestion: feeds → Kafka → MongoDB.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run the Faust agents (poller, dedupe, sink, stats, scheduler)")
    sub.add_parser("api", help="run the HTTP API, SSE stream and dashboard")
    imp = sub.add_parser("import", help="import feeds now and show their progress; exit 0 when all completed")
    imp.add_argument("urls", nargs="*", help="feed URLs (default: every feed of FEEDS_FILE)")
    imp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the runs (default 600)")
    rep = sub.add_parser("replay", help="parse a run's stored payload again as a new run; exit 0 when it completed")
    rep.add_argument("run_id", metavar="RUN_ID", help="the run whose payload to replay (a replay run: the payload it replayed)")
    rep.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the run (default 600)")
    pre = sub.add_parser("preview", help="fetch a feed and show how it reads, writing nothing")
    pre.add_argument("url", metavar="URL")
    pre.add_argument("--format", default=None, help=f"one of {', '.join(FORMATS)} (default {DEFAULT_FORMAT})")
    pre.add_argument("--mapping", type=Path, default=None, metavar="FILE", help="the format's mapping (JSON or YAML)")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"jobstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "worker":
        from streams.worker import run_worker

        run_worker(settings)
        return 0
    if args.command == "api":
        from api.app import run_api

        run_api(settings)
        return 0
    if args.command == "replay":
        try:
            runs = asyncio.run(replay_runs(settings, args.run_id, args.timeout, sys.stdout))
        except ReplayRefused as exc:
            print(f"jobstream replay: {exc}", file=sys.stderr)
            return 2
        return report(runs, args.timeout, sys.stdout)
    if args.command == "preview":
        return run_preview(settings, args.url, args.format, args.mapping)
    try:
        feeds = [entry_from(url, f"argument {url!r}") for url in args.urls] or parse_feeds_file(
            settings.feeds_file.read_text(encoding="utf-8"))
    except (RegistryError, OSError) as exc:
        print(f"jobstream import: {exc}", file=sys.stderr)
        return 2
    if not feeds:
        print("jobstream import: no feeds given and none in FEEDS_FILE", file=sys.stderr)
        return 2
    runs = asyncio.run(import_feeds(settings, feeds, args.timeout, sys.stdout))
    return report(runs, args.timeout, sys.stdout)


def run_preview(settings: Settings, url: str, format_: str | None, mapping_file: Path | None) -> int:
    """``jobstream preview``: 0 and the table, 1 when the feed cannot be read, 2 for bad arguments."""
    try:
        entry_from(url, f"argument {url!r}")
        mapping = read_mapping(mapping_file) if mapping_file is not None else None
    except (RegistryError, OSError) as exc:
        print(f"jobstream preview: {exc}", file=sys.stderr)
        return 2
    problem = format_problem(format_ or DEFAULT_FORMAT, mapping)
    if problem is not None:
        print(f"jobstream preview: {problem}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(preview(settings, url, format_ or DEFAULT_FORMAT, mapping))
    except PreviewFailed as exc:
        print(f"jobstream preview: {exc}", file=sys.stderr)
        return 1
    preview_table(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
