"""Benchmark: a first import and a re-import of one N-posting feed through the real local stack.

Prints figures (postings/s end to end, worker peak memory); asserts nothing about speed.
Usage: .venv/bin/python deploy/bench.py [--items 100000] [--partitions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.registry import FeedEntry  # noqa: E402
from streams.cli import import_feeds  # noqa: E402
from tests.support import WORKER_READY, FeedServer, Process, isolated_env, mongo_db, rss, settings_of  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    import os

    unique = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="jobstream-bench-"))
    env = isolated_env(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                       os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017"), f"bench{unique}", workdir,
                       TOPIC_PARTITIONS=str(args.partitions), BATCH_SIZE=str(args.batch_size), BATCH_WINDOW_SECONDS="1.0",
                       LOG_LEVEL="INFO", REPAIR_AFTER_SECONDS="60")
    items = [{"guid": f"job-{i}", "title": f"Engineer {i}", "company": f"Company {i % 997}",
              "description": "<p>Build things. " + "Lorem ipsum dolor sit amet. " * 8 + "</p>"} for i in range(args.items)]
    body = rss(items)
    server = FeedServer()
    await server.start()
    url = server.put("bench.xml", body, conditional=False)
    worker = Process("worker", env, workdir / "worker.log")
    worker.start(WORKER_READY)
    if worker.proc is None:
        raise RuntimeError("worker did not start")
    print(f"feed: {args.items} postings, {len(body) / 1e6:.1f} MB; partitions={args.partitions} batch={args.batch_size}")
    try:
        for label in ("first import", "re-import (unchanged)"):
            started = time.perf_counter()
            runs = await import_feeds(settings_of(env), [FeedEntry(url, "bench")], 1800, io.StringIO())
            elapsed = time.perf_counter() - started
            [run] = runs.values()
            print(f"{label:22} status={run['status']} new={run['newJobs']} updated={run['updatedJobs']} "
                  f"unchanged={run['unchangedJobs']} failed={run['failedJobs']} "
                  f"wall={elapsed:.1f}s  {args.items / elapsed:,.0f} postings/s  worker peak RSS={peak_rss_mib(worker.proc.pid):.0f} MiB")
        print(f"jobs in MongoDB: {mongo_db(env).jobs.count_documents({})}")
    finally:
        worker.stop()
        await server.stop()
        mongo_db(env).client.drop_database(env["MONGO_DB"])


if __name__ == "__main__":
    asyncio.run(main())
