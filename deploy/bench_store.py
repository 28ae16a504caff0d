"""Store benchmark: FerretDB patched (the local stack's) and as shipped, at a million jobs.

For each build it starts its own FerretDB on a free loopback port (data under .state/bench-store),
fills `jobs` and `job_search` with N documents shaped like the pipeline's and `import_logs` with
runs, starts a `jobstream api` on it, and prints: insert rate, updates by _id in commands of
MONGO_WRITE_BATCH statements, one command of 500 updates, API reads p50/p95, the store's peak
memory and disk. Figures only: nothing here asserts a speed. Every wait has a deadline, so the
shipped build's wedged or scanning commands are reported as such and the run still ends.

Usage: make bench-store  (Kafka running: `make run` or `deploy/stack.py up`)
       .venv/bin/python deploy/bench_store.py [--docs 1000000] [--runs 10000] [--builds patched,shipped]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess  # noqa: S404 - starts the store and the API it measures
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy"))

import stack  # noqa: E402
from bench import peak_rss_mib  # noqa: E402

from models.postings import job_insert, job_upsert, search_document  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.store import Store  # noqa: E402
from tests.support import free_port  # noqa: E402

WORDS = ("senior", "junior", "lead", "staff", "python", "java", "data", "cloud", "frontend", "backend",
         "platform", "security", "mobile", "machine", "learning", "site", "reliability", "product")
ROLES = ("engineer", "developer", "analyst", "manager", "designer", "scientist", "architect", "administrator")
FEEDS = 100
COMPANIES = 20_000
BASE = datetime(2025, 1, 1, tzinfo=UTC)


def change(i: int, version: int = 1) -> dict[str, Any]:
    """The sink's input for posting i: what the pipeline would write for it."""
    rnd = random.Random(i)  # noqa: S311 - reproducible test data
    title = f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} {rnd.choice(ROLES)}" + (f" rare{i}" if i % 1000 == 0 else "")
    published = BASE + timedelta(seconds=i * 31 % 31_536_000)
    job = {
        "dedupeKey": f"{i:040x}", "sourceUrl": f"https://feeds.example/{i % FEEDS}.xml", "sourceName": f"feed {i % FEEDS}",
        "externalId": f"https://jobs.example/{i}", "title": title, "company": f"Company {rnd.randrange(COMPANIES)}",
        "location": rnd.choice(("Remote", "Berlin", "Austin, TX", "Lagos")), "jobType": "Full-time",
        "categories": ["Engineering", rnd.choice(ROLES)], "region": "Worldwide", "url": f"https://jobs.example/{i}",
        "description": "<p>" + " ".join(rnd.choices(WORDS + ROLES, k=150)) + "</p>",
        "publishedAt": published.isoformat(), "fingerprint": f"{i * version:040x}",
    }
    return {"type": "created" if version == 1 else "updated", "runId": f"run-{i // 1000}", "seq": i % 1000,
            "version": version, "fingerprint": job["fingerprint"], "occurredAt": published.isoformat(), "job": job}


def run_document(i: int) -> dict[str, Any]:
    started = BASE + timedelta(minutes=i)
    status = ("completed", "completed", "completed", "partial", "failed")[i % 5]
    return {"runId": f"{started:%Y%m%dT%H%M%S}-{i:06d}", "sourceUrl": f"https://feeds.example/{i % FEEDS}.xml",
            "fileName": f"https://feeds.example/{i % FEEDS}.xml", "sourceName": f"feed {i % FEEDS}", "trigger": "schedule",
            "status": status, "requestedAt": started, "startedAt": started, "finishedAt": started + timedelta(seconds=9),
            "durationMs": 9000, "totalFetched": 100, "newJobs": 10, "updatedJobs": 5, "unchangedJobs": 85 - (i % 5 == 3),
            "failedJobs": int(i % 5 == 3), "totalImported": 15, "failures": [], "error": "fetch failed" if status == "failed" else None,
            "meta": {"httpStatus": 200, "bytes": 123456}, "lastProgressAt": started + timedelta(seconds=9)}


def disk_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def timed(action: Callable[[], object], limit: float) -> float | None:
    """Seconds the action took, or None when it did not finish within ``limit`` (left running)."""
    outcome: list[float] = []

    def target() -> None:
        started = time.perf_counter()
        try:
            action()
            outcome.append(time.perf_counter() - started)
        except (PyMongoError, OSError) as exc:
            print(f"      ({type(exc).__name__}: {str(exc)[:120]})")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    return outcome[0] if outcome else None


def fmt(seconds: float | None, limit: float) -> str:
    return f"> {limit:.0f} s (no answer)" if seconds is None else f"{seconds * 1000:,.0f} ms"


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Bench:
    def __init__(self, patched: bool, docs: int, runs: int, limit: float) -> None:
        self.patched, self.docs, self.runs, self.limit = patched, docs, runs, limit
        self.variant = "patched" if patched else "as shipped"
        self.data = stack.STATE / "bench-store" / ("patched" if patched else "shipped")
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.write_batch = Settings().mongo_write_batch
        self.procs: list[subprocess.Popen[bytes]] = []
        self.profiler: threading.Thread | None = None

    def start_store(self) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        log = (self.data.parent / f"ferretdb-{self.data.name}.log").open("wb")
        self.debug = f"127.0.0.1:{free_port()}"
        command = [str(stack.ferretdb_binary(self.patched)), "-listen", f"127.0.0.1:{self.port}", "-data", str(self.data),
                   "-debug-addr", self.debug]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        self.procs.append(proc)
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=20_000)
        client.admin.command("ping")
        client.close()
        return proc

    def start_api(self) -> str:
        port = free_port()
        env = {**os.environ, "MONGO_URL": self.url, "MONGO_DB": "bench", "API_PORT": str(port),
               "API_STORE_TIMEOUT_SECONDS": str(self.limit), "FEEDS_FILE": str(self.data.parent / "feeds.yaml"),
               "LOG_LEVEL": "WARNING"}
        (self.data.parent / "feeds.yaml").write_text("feeds: []\n")
        log = (self.data.parent / f"api-{self.data.name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], cwd=ROOT, env=env,  # noqa: S603
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600  # index creation on a full collection may take a while
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=5):  # noqa: S310 - loopback
                    return base
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"API did not start; see {log.name}")

    def stop(self) -> None:
        if self.profiler is not None:  # the profile is read from the store: let it finish first
            self.profiler.join(60)
        for proc in reversed(self.procs):
            proc.kill()
            proc.wait(30)

    def run(self) -> None:
        print(f"\n== FerretDB 1.24 {self.variant} ({self.docs:,} jobs, {self.runs:,} runs) ==")
        proc = self.start_store()
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.url, tz_aware=True, timeoutMS=self.limit * 1000)
        db = client["bench"]
        try:
            self.fill(db)
            base = self.start_api()
            self.reads(base)
            self.updates(db, proc.pid)
        finally:
            print(f"  store: peak RSS {peak_rss_mib(proc.pid):,.0f} MiB, disk {disk_mib(self.data):,.0f} MiB")
            client.close()
            self.stop()

    def fill(self, db: pymongo.database.Database[dict[str, Any]]) -> None:
        # The indexes the worker and the API create, before the data, as in production.
        async def indexes() -> None:
            store = Store(Settings(mongo_url=self.url, mongo_db="bench"))
            await store.ensure_indexes()
            await store.close()

        asyncio.run(indexes())
        jobs_seconds = search_seconds = 0.0
        for batch in chunks(list(range(self.docs)), 500):
            changes = [change(i) for i in batch]
            documents = [job_insert(c) for c in changes]
            started = time.perf_counter()
            db.jobs.insert_many(documents, ordered=False)
            jobs_seconds += time.perf_counter() - started
            documents = [search_document(c) for c in changes]
            started = time.perf_counter()
            db.job_search.insert_many(documents, ordered=False)
            search_seconds += time.perf_counter() - started
            if (batch[-1] + 1) % 100_000 == 0:
                print(f"  inserted {batch[-1] + 1:,} jobs at {(batch[-1] + 1) / jobs_seconds:,.0f} jobs/s "
                      f"(job_search {(batch[-1] + 1) / search_seconds:,.0f} docs/s)", flush=True)
        self.insert_rate = self.docs / jobs_seconds
        for batch in chunks(list(range(self.runs)), 500):
            db.import_logs.insert_many([run_document(i) for i in batch])
        print(f"  insert rate into jobs: {self.insert_rate:,.0f} docs/s (insert_many of 500, "
              f"{len(db.jobs.index_information())} indexes); "
              f"job_search: {self.docs / search_seconds:,.0f} docs/s")

    def reads(self, base: str) -> None:
        company = "Company%20" + str(4242)
        queries = [
            ("jobs newest first", "/api/jobs?limit=50"),
            ("jobs by company", f"/api/jobs?limit=50&company={company}"),
            ("jobs by source", "/api/jobs?limit=50&source=https://feeds.example/7.xml"),
            ("jobs q common (engineer)", "/api/jobs?limit=50&q=engineer"),
            ("jobs q two words", "/api/jobs?limit=50&q=python%20developer"),
            ("jobs q rare (rare424000)", "/api/jobs?limit=50&q=rare424000"),
            ("jobs q absent", "/api/jobs?limit=50&q=zzzqqq"),
            ("import-logs newest first", "/api/import-logs?limit=50"),
            ("import-logs by status", "/api/import-logs?limit=50&status=failed"),
            ("import-logs by source", "/api/import-logs?limit=50&source=https://feeds.example/7.xml"),
        ]
        samples = 20 if self.patched else 1
        if not self.patched:  # each read scans the collection: the first few tell the story
            queries = queries[:3] + queries[7:8]
        for label, path in queries:
            times: list[float] = []
            statuses: set[int] = set()
            for _ in range(samples):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(base + path, timeout=self.limit + 5) as response:  # noqa: S310
                        response.read()
                        statuses.add(response.status)
                except urllib.error.HTTPError as exc:
                    statuses.add(exc.code)
                except OSError:
                    statuses.add(0)
                times.append(time.perf_counter() - started)
                if times[-1] > self.limit:
                    break
            times.sort()
            p50 = statistics.median(times)
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"  GET {label:28} p50 {p50 * 1000:8,.0f} ms  p95 {p95 * 1000:8,.0f} ms  "
                  f"(n={len(times)}, status {','.join(map(str, sorted(statuses)))})", flush=True)

    def updates(self, db: pymongo.database.Database[dict[str, Any]], pid: int) -> None:
        rnd = random.Random(7)  # noqa: S311 - reproducible sample
        picks = rnd.sample(range(self.docs), 3000)

        def upserts(keys: list[int]) -> list[UpdateOne[dict[str, Any]]]:
            return [UpdateOne(*job_upsert(change(i, version=2)), upsert=True) for i in keys]

        def run(commands: list[list[UpdateOne[dict[str, Any]]]]) -> bool:
            for operations in commands:
                if timed(lambda operations=operations: db.jobs.bulk_write(operations, ordered=False), self.limit) is None:
                    return False
            return True

        inflight = Settings().mongo_max_inflight_writes
        self.profiler = threading.Thread(target=self.profile, args=("updates", 5 if self.patched else 20), daemon=True)
        self.profiler.start()
        rounds = (("one at a time", 1, picks[:1000]), (f"{inflight} in flight (the sink's bound)", inflight, picks[1000:2000]))
        for label, lanes, keys in rounds:
            keys = keys if self.patched else keys[:self.write_batch]
            prepared = [upserts(batch) for batch in chunks(keys, self.write_batch)]  # built before the clock starts
            started = time.perf_counter()
            with ThreadPoolExecutor(lanes) as pool:
                answered = all(pool.map(run, [prepared[lane::lanes] for lane in range(lanes)]))
            if not answered:
                print(f"  updates by _id, commands of {self.write_batch}, {label}: no answer within {self.limit:.0f} s "
                      f"to one command (< {self.write_batch / self.limit:.1f} updates/s)")
                return
            rate = len(keys) / (time.perf_counter() - started)
            print(f"  updates by _id, commands of {self.write_batch}, {label}: {rate:,.0f} updates/s "
                  f"({rate / self.insert_rate:.2f}x the insert rate)", flush=True)
        big = upserts(picks[2000:2500])
        took = timed(lambda: db.jobs.bulk_write(big, ordered=False), self.limit)
        print(f"  one command of 500 updates by _id: {fmt(took, self.limit)}"
              + ("" if took is not None else "; the store is wedged (as reported in the issue)"), flush=True)

    def profile(self, what: str, seconds: int) -> None:
        """A CPU profile of the store while ``what`` runs, with its top functions, under .artifacts/."""
        out = ROOT / ".artifacts" / f"ferretdb-{self.data.name}-{what}.pprof"
        out.parent.mkdir(exist_ok=True)
        try:
            with urllib.request.urlopen(f"http://{self.debug}/debug/pprof/profile?seconds={seconds}",  # noqa: S310
                                        timeout=seconds + 30) as response:
                out.write_bytes(response.read())
            top = subprocess.run(["go", "tool", "pprof", "-top", "-cum", "-nodecount=40",  # noqa: S603, S607
                                  str(stack.ferretdb_binary(self.patched)), str(out)], capture_output=True, text=True)
            out.with_suffix(".txt").write_text(top.stdout)
        except OSError as exc:
            print(f"      (no profile: {exc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--builds", default="patched,shipped")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before a command counts as unanswered")
    args = parser.parse_args()
    if args.docs < 3000:
        parser.error("--docs must be at least 3000 (the update rounds pick 3,000 distinct jobs)")
    for build in args.builds.split(","):
        Bench(build == "patched", args.docs, args.runs, args.limit).run()


if __name__ == "__main__":
    main()
