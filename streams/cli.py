"""The ``jobstream`` command: ``worker``, ``api``, ``import URL...``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.registry import FeedEntry, RegistryError, entry_from, parse_feeds_file
from models.runs import FINISHED
from streams.commands import aiokafka_sender, producer_for, request_runs
from streams.settings import Settings, SettingsError
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
        commands = await request_runs(aiokafka_sender(producer), settings, feeds, "cli")
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


if __name__ == "__main__":
    sys.exit(main())
