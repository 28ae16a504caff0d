"""Fault injection against a real local stack (``make chaos``): kill things mid-import, then prove the data exact.

The run starts a stack of its own, never the shared one: a Kafka broker (KRaft) and a patched FerretDB
on free loopback ports with their data under ``.state/chaos/<run>/``, two workers sharing the
partitions, an API, a loopback feed server and an SSE client. Each round imports every feed through
``POST /api/import/run`` once per fault and, while the import is in flight, injects the fault:
kill -9 one worker, kill -9 Kafka, kill -9 the store, SIGSTOP the store for a while, restart the API
under a connected SSE client. Then it checks against ground truth computed from the generated feeds
(``deploy/chaos_corpus.py``, which does not use the pipeline's code): every run final with exact
counts, ``jobs`` holding exactly the expected documents and versions, ``jobs.changes`` holding every
change that happened and none that did not, and the SSE client holding every final snapshot.

One line per fault, then ``N passed, N failed``; exit status 1 on any failure. Bounded by a global
deadline; everything it started is stopped on exit, whatever happens (signals included; children
also die with it if it is killed, by PR_SET_PDEATHSIG).

Usage: python deploy/chaos.py [--quick] [--rounds N] [--postings N] [--deadline-minutes M] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess  # noqa: S404 - this module's job is starting and killing processes
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pymongo
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from pymongo.errors import PyMongoError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import stack  # noqa: E402 - deploy/ is not a package: found through sys.path above
from chaos_corpus import COUNTS, Corpus, RunTruth, Truth, render  # noqa: E402

from tests.support import FeedServer, free_port, isolated_env  # noqa: E402

FINISHED = frozenset({"completed", "partial", "failed"})
FAULTS = ("worker-kill", "kafka-kill", "store-kill", "store-stop", "api-restart")
# Injected at the moment the runs are requested, not once the group has settled (issue 20): what an
# autoscaler, a rolling deploy or a crash right after start does to runs requested meanwhile.
REBALANCE_FAULTS = ("worker-join", "worker-leave", "worker-kill-early", "join-then-kill")
REBALANCE_RECOVERY_SECONDS = 60.0  # every run final this soon after the last fault
SHARED_PORTS = frozenset({stack.KAFKA_PORT, stack.KAFKA_CONTROLLER_PORT, stack.MONGO_PORT, 8080, 9464})
CHAOS_STATE = stack.STATE / "chaos"
KEEP_RUNS = 3  # older run folders under .state/chaos are removed
DOWN_SECONDS = 5.0  # how long a killed service stays down before its restart
PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


@dataclass(frozen=True)
class Plan:
    """Sizes and timings of one chaos run."""

    sizes: tuple[int, ...]
    rounds: int
    faults: tuple[str, ...]
    store_pause: float  # seconds the store stays SIGSTOPped
    edit: float  # share of postings edited per wave
    add: float
    remove: float
    deadline: float  # seconds for the whole run, start-up included
    run_timeout: float  # RUN_TIMEOUT_SECONDS of the pipeline
    in_flight: float  # share of the wave's items accounted for when the fault is injected


FULL = Plan(sizes=(14_000, 10_000, 8_000, 6_000, 5_000, 4_000, 2_000, 1_000), rounds=3, faults=FAULTS, store_pause=60.0,
            edit=0.05, add=0.02, remove=0.003, deadline=40 * 60.0, run_timeout=600.0, in_flight=0.2)
QUICK = Plan(sizes=(2_500, 1_700, 1_200, 600), rounds=1, faults=FAULTS, store_pause=20.0,
             edit=0.05, add=0.02, remove=0.005, deadline=4.5 * 60.0, run_timeout=240.0, in_flight=0.15)
# Many feeds of many sizes: many commands in flight while the group changes under them. A third of
# the postings change every wave, so a wave takes several seconds and a kill 1-5 s after the request
# lands mid-import (each note says how far the wave was): with 5% edits and a fifth of these sizes the
# waves were done in about a second, and every kill struck a finished import.
REBALANCE_SIZES = (6_000, 4_800, 4_000, 3_200, 2_800, 2_400, 2_000, 1_600, 1_200, 1_000, 800, 600, 400, 320, 240, 200)
REBALANCE = Plan(sizes=REBALANCE_SIZES, rounds=20, faults=REBALANCE_FAULTS, store_pause=0.0,
                 edit=0.3, add=0.02, remove=0.005, deadline=90 * 60.0, run_timeout=600.0, in_flight=0.0)
# CI size: half the postings (about 15,800), so the four waves fit the suite's time.
REBALANCE_QUICK = dataclasses.replace(REBALANCE, sizes=tuple(size // 2 for size in REBALANCE_SIZES), rounds=1, deadline=6 * 60.0)


# --- processes ---------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: own session (one group to stop), and SIGKILL if the chaos run dies."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One process this run owns; started from the main thread (PDEATHSIG follows the thread that forked)."""

    def __init__(self, name: str, command: Callable[[], list[str]], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.expected_down = False

    def start(self) -> None:
        command = self.command()
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"\n=== chaos: start {self.name} at {datetime.now(UTC).isoformat()} ===\n".encode())
            self.proc = subprocess.Popen(  # noqa: S603
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=self.env,
                preexec_fn=_die_with_parent,  # before exec only: setsid and prctl, no Python state touched
            )
        self.expected_down = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_since_start(self) -> str:
        with self.log.open("rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the process itself only: the crash the pipeline must survive (its children must follow it)."""
        self.expected_down = True
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, grace: float = 20.0) -> None:
        """Stop the process group this child leads (it and what it started), gently first."""
        self.expected_down = True
        if self.proc is None or (self.proc.poll() is not None and not self.leftovers()):
            return  # nothing of ours left in that group: its number may belong to someone else by now
        group = self.proc.pid
        for sig in (signal.SIGCONT, signal.SIGTERM):  # a SIGSTOPped store would never act on SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def leftovers(self) -> list[int]:
        """Processes still in this child's group once it is dead (e.g. parse processes that outlived a worker)."""
        if self.proc is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # Zombies are dead already (only not yet reaped by whoever inherited them).
            if int(fields[2]) == self.proc.pid and int(stat.parent.name) != self.proc.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found


class ChaosStack:
    """Kafka, FerretDB, two workers and the API of this run, on ports of its own."""

    def __init__(self, base: Path, plan: Plan) -> None:
        self.base = base
        ports: set[int] = set()
        while len(ports) < 7:
            port = free_port()
            if port not in SHARED_PORTS:
                ports.add(port)
        (self.kafka_port, self.controller_port, self.mongo_port, self.api_port, metrics_a, metrics_b, _) = sorted(ports)
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}"
        self.token = secrets.token_hex(16)
        logs = base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        unique = base.name.replace("-", "")[-10:]
        common = isolated_env(self.bootstrap, self.mongo_url, unique, base, API_PORT=str(self.api_port), TOPIC_PARTITIONS="8",
                              RUN_TIMEOUT_SECONDS=str(plan.run_timeout), API_TOKEN=self.token, MONGO_DB="chaos",
                              TOPIC_PREFIX=f"chaos{unique}.", APP_ID=f"chaos{unique}")
        env = {k: v for k, v in os.environ.items() if k not in common and not k.startswith(("KAFKA_", "MONGO_"))}
        self.env = {**env, **common}
        self.settings_env = common
        kafka_dir, ferret_dir = base / "kafka", base / "ferretdb"
        self.kafka = Child("kafka", lambda: [*stack.java_command(kafka_dir), "kafka.Kafka",
                                             str(stack.kafka_config(self.kafka_port, self.controller_port, kafka_dir))],
                           dict(os.environ), logs / "kafka.log")
        self.ferretdb = Child("ferretdb", lambda: stack.ferretdb_command(self.mongo_port, ferret_dir), dict(os.environ),
                              logs / "ferretdb.log")
        python = [sys.executable, "-m", "streams.cli"]
        self.workers = [
            Child(f"worker-{i}", lambda: [*python, "worker"],
                  {**self.env, "DATA_DIR": str(base / f"worker-{i}-data"), "WORKER_METRICS_PORT": str(port)}, logs / f"worker-{i}.log")
            for i, port in enumerate((metrics_a, metrics_b))
        ]
        self.api = Child("api", lambda: [*python, "api"], self.env, logs / "api.log")

    def children(self) -> list[Child]:
        return [self.api, *self.workers, self.kafka, self.ferretdb]

    def stop_all(self) -> None:
        for child in self.children():
            child.stop()

    # readiness ---------------------------------------------------------------------------------

    async def kafka_ready(self) -> bool:
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(client.bootstrap(), 5)
            metadata = await asyncio.wait_for(client.fetch_all_metadata(), 5)
            return bool(metadata.brokers())
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def mongo_ready(self) -> bool:
        def ping() -> bool:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.mongo_url, serverSelectionTimeoutMS=2000)
            try:
                client.admin.command("ping")
                return True
            except PyMongoError:
                return False
            finally:
                client.close()

        return await asyncio.to_thread(ping)

    async def api_ready(self) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{self.api_port}/health", timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def start(self, child: Child, timeout: float = 120.0) -> None:
        """Start ``child`` and wait until it serves; raise naming its log when it does not."""
        child.start()
        ready: Callable[[], Awaitable[bool]]
        if child is self.kafka:
            ready = self.kafka_ready
        elif child is self.ferretdb:
            ready = self.mongo_ready
        elif child is self.api:
            ready = self.api_ready
        else:
            port = int(child.env["WORKER_METRICS_PORT"])

            async def ready() -> bool:
                answer = await asyncio.to_thread(stack.worker_readiness, port)
                return bool(answer and answer.get("ready"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode if child.proc else '?'}; see {child.log}")
            if await ready():
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{child.name} not ready after {timeout:.0f}s; see {child.log}")

    async def settled(self, timeout: float = 120.0) -> None:
        """Until every running worker answers /ready in one group generation (a rebalance is over)."""
        deadline = time.monotonic() + timeout
        answers: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            ports = [int(w.env["WORKER_METRICS_PORT"]) for w in self.workers if w.alive()]
            answers = [await asyncio.to_thread(stack.worker_readiness, port) for port in ports]
            if answers and all(a and a.get("ready") for a in answers) and len({a.get("generation") for a in answers if a}) == 1:
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"workers did not settle within {timeout:.0f}s: {answers}")

    async def up(self) -> None:
        t0 = time.monotonic()
        for child in (self.kafka, self.ferretdb):
            await self.start(child)
        for worker in self.workers:
            await self.start(worker)
        await self.start(self.api)
        say(f"stack up in {time.monotonic() - t0:.0f}s: kafka {self.bootstrap} (pid {self.kafka.pid}), ferretdb "
            f"{self.mongo_url} (pid {self.ferretdb.pid}), workers pids {[w.pid for w in self.workers]}, "
            f"api http://127.0.0.1:{self.api_port}/ (pid {self.api.pid}); logs in {self.base / 'logs'}")


# --- observers: the SSE client and the jobs.changes reader -------------------------------------


class SseClient:
    """A dashboard-like client of the event stream: reconnects with Last-Event-ID, reloads over REST on resync."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.finals: dict[str, dict[str, Any]] = {}  # runId → final snapshot received as an event
        self.reloaded: dict[str, dict[str, Any]] = {}  # runId → final row read over REST after a resync
        self.last_id: str | None = None
        self.connections = 0
        self.resyncs = 0
        self.connected = asyncio.Event()

    def final(self, run_id: str) -> dict[str, Any] | None:
        return self.finals.get(run_id) or self.reloaded.get(run_id)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)) as session:
            while True:
                headers = {"Accept": "text/event-stream"}
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                retry = 1.0
                try:
                    async with session.get(f"{self.base_url}/api/import-logs/stream", headers=headers) as response:
                        if response.status == 200:
                            self.connections += 1
                            self.connected.set()
                            retry = await self.read(session, response)
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    pass
                self.connected.clear()
                await asyncio.sleep(retry)

    async def read(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> float:
        event, data, event_id, retry = "message", [], None, 1.0
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
                elif name == "retry" and value.isdigit():
                    retry = min(int(value) / 1000, 3.0)
                continue
            if event_id is not None:
                self.last_id = event_id
            if event == "import-log" and data:
                snapshot = json.loads("\n".join(data))
                if snapshot.get("status") in FINISHED:
                    self.finals[snapshot["runId"]] = snapshot
            elif event == "resync":
                self.resyncs += 1
                await self.reload(session)
            event, data, event_id = "message", [], None
        return retry

    async def reload(self, session: aiohttp.ClientSession) -> None:
        """What a dashboard does on ``resync``: read the runs list again over REST."""
        url: str | None = f"{self.base_url}/api/import-logs?limit=200"
        while url:
            async with session.get(url) as response:
                body = await response.json()
            for row in body["items"]:
                if row.get("status") in FINISHED and row["runId"] not in self.finals:
                    self.reloaded[row["runId"]] = row
            url = f"{self.base_url}/api/import-logs?limit=200&after={body['next']}" if body.get("next") else None


@dataclass
class ChangesLog:
    """Everything read so far from ``jobs.changes`` (from the beginning), by (dedupeKey, version)."""

    topic: str
    positions: dict[int, int] = field(default_factory=dict)
    seen: dict[tuple[str, int], tuple[str, str, str]] = field(default_factory=dict)
    deliveries: int = 0
    conflicting: list[str] = field(default_factory=list)  # the same (key, version) with other content
    fresh: list[tuple[str, int]] = field(default_factory=list)  # read by the last catch_up

    async def catch_up(self, bootstrap: str) -> None:
        """Read from the last positions to the current end of every partition (a consumer of our own, no group)."""
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:  # a group-less consumer knows no partitions of a topic it was not assigned: ask the cluster
            await client.bootstrap()
            partitions = (await client.fetch_all_metadata()).partitions_for_topic(self.topic) or set()
        finally:
            await client.close()
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions in metadata")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        self.fresh = []
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in self.positions:
                    consumer.seek(tp, self.positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if self.positions.get(tp.partition, 0) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        self.positions[tp.partition] = record.offset + 1
                        if record.value is None:
                            continue
                        change = json.loads(record.value)
                        ident = (str(change["job"]["dedupeKey"]), int(change["version"]))
                        content = (str(change["type"]), str(change["runId"]), str(change["job"]["title"]))
                        self.deliveries += 1
                        self.fresh.append(ident)
                        if ident in self.seen and self.seen[ident] != content:
                            self.conflicting.append(f"{ident}: {self.seen[ident]} then {content}")
                        self.seen.setdefault(ident, content)
        finally:
            await consumer.stop()


# --- checks ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What one fault's check found; ``ok`` only when every figure is zero."""

    lost: int = 0
    duplicated: int = 0
    miscounted: int = 0
    stuck: int = 0
    sse_missing: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.miscounted or self.stuck or self.sse_missing or self.details)


def check_runs(truths: list[RunTruth], rows: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    for truth in truths:
        row = rows.get(truth.run_id)
        if row is None or row.get("status") not in FINISHED:
            verdict.stuck += 1
            seen = {k: row.get(k) for k in ("status", *COUNTS)} if row else "no import_logs row"
            verdict.details.append(f"run {truth.run_id} ({truth.feed.name}) not final: {seen}")
            continue
        actual = {k: int(row.get(k) or 0) for k in COUNTS}
        off = sum(abs(actual[k] - truth.counts[k]) for k in COUNTS)
        invariant = actual["totalFetched"] == sum(actual[k] for k in COUNTS[1:])
        if off or row["status"] != truth.status or not invariant:
            verdict.miscounted += off or 1
            verdict.details.append(f"run {truth.run_id} ({truth.feed.name}): expected {truth.status} {truth.counts}, "
                                   f"got {row['status']} {actual} error={row.get('error')!r}")


def check_jobs(truth: Truth, docs: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    missing = stale = wrong = ahead = 0
    examples: list[str] = []
    for key, job in truth.jobs.items():
        doc = docs.get(key)
        if doc is None:
            missing += 1
            problem = "missing"
        elif int(doc.get("version") or 0) < job.version:
            stale += 1
            problem = f"stale version {doc.get('version')} < {job.version}"
        elif int(doc.get("version") or 0) > job.version:
            ahead += 1
            problem = f"version {doc.get('version')} > {job.version}"
        elif (doc.get("title"), doc.get("description"), doc.get("lastRunId"), doc.get("sourceUrl"), doc.get("externalId"),
              doc.get("dedupeKey")) != (job.title, job.description, job.last_run_id, job.source_url, job.external_id, key):
            wrong += 1
            problem = f"content differs: title={doc.get('title')!r} expected {job.title!r}, lastRunId={doc.get('lastRunId')}"
        else:
            continue
        if len(examples) < 5:
            examples.append(f"{key} ({job.external_id}): {problem}")
    extra = [key for key in docs if key not in truth.jobs]
    verdict.lost += missing + stale + wrong
    verdict.duplicated += len(extra) + ahead
    if missing or stale or wrong or ahead or extra:
        verdict.details.append(f"jobs: {len(docs)} documents, {len(truth.jobs)} expected; missing={missing} stale={stale} "
                               f"wrong={wrong} ahead={ahead} extra={len(extra)}; e.g. {examples + extra[:3]}")


def check_changes(truth: Truth, wave: list[RunTruth], log: ChangesLog, verdict: Verdict) -> None:
    expected = [ident for run in wave for ident in run.changes]
    missing = [ident for ident in expected if ident not in log.seen]
    wrong = [ident for ident in expected if ident in log.seen and log.seen[ident] != (
        truth.changes[ident].type, truth.changes[ident].run_id, truth.changes[ident].title)]
    unexpected = sorted({ident for ident in log.fresh if ident not in truth.changes})
    verdict.lost += len(missing) + len(wrong)
    verdict.duplicated += len(unexpected) + len(log.conflicting)
    if missing or wrong or unexpected or log.conflicting:
        verdict.details.append(f"jobs.changes: {len(expected)} expected this wave, missing={len(missing)} wrong={len(wrong)} "
                               f"unexpected={len(unexpected)} conflicting={len(log.conflicting)}; e.g. "
                               f"{(missing + wrong + unexpected)[:3]} {log.conflicting[:2]}")
    log.conflicting.clear()


def check_sse(sse: SseClient, wave: list[RunTruth], rows: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    for truth in wave:
        row = rows.get(truth.run_id)
        got = sse.final(truth.run_id)
        if row is None or row.get("status") not in FINISHED:
            continue  # counted as stuck already
        if got is None:
            verdict.sse_missing += 1
            verdict.details.append(f"SSE client has no final snapshot of run {truth.run_id} ({truth.feed.name})")
        elif [got.get(k) for k in ("status", *COUNTS)] != [row.get(k) for k in ("status", *COUNTS)]:
            verdict.sse_missing += 1
            verdict.details.append(f"SSE final snapshot of run {truth.run_id} differs from import_logs: "
                                   f"{[got.get(k) for k in ('status', *COUNTS)]} vs {[row.get(k) for k in ('status', *COUNTS)]}")


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    round: int
    verdict: Verdict
    recovery: float | None
    note: str
    expected: dict[str, int]


class Chaos:
    """The rounds: per fault, change the feeds, request the runs, inject the fault mid-import, check."""

    def __init__(self, plan: Plan, chaos_stack: ChaosStack, server: FeedServer, corpus: Corpus) -> None:
        self.plan = plan
        self.stack = chaos_stack
        self.server = server
        self.corpus = corpus
        self.truth = Truth()
        self.sse = SseClient(f"http://127.0.0.1:{chaos_stack.api_port}")
        self.changes = ChangesLog(f"{chaos_stack.settings_env['TOPIC_PREFIX']}jobs.changes")
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            chaos_stack.mongo_url, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000, socketTimeoutMS=60000, tz_aware=True)
        self.db = self.client[chaos_stack.settings_env["MONGO_DB"]]
        self.outcomes: list[Outcome] = []
        self.wave = 0
        self.problems: list[str] = []  # what went wrong with the fault itself (a process surviving, no reconnect)

    def publish_feeds(self) -> None:
        for feed in self.corpus.feeds:
            self.server.put(feed.name, render(feed), conditional=False)

    async def request_runs(self) -> list[RunTruth]:
        """POST /api/import/run for every feed (retried while the API or its Kafka producer is coming back)."""
        url = f"http://127.0.0.1:{self.stack.api_port}/api/import/run"
        headers = {"Authorization": f"Bearer {self.stack.token}"}
        body = {"feeds": [feed.url for feed in self.corpus.feeds]}
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            while True:
                try:
                    async with session.post(url, json=body, headers=headers) as response:
                        answer = await response.json()
                        if response.status == 202:
                            break
                        problem = f"{response.status} {answer}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = repr(exc)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"POST /api/import/run kept failing: {problem}")
                await asyncio.sleep(2)
        if answer.get("skipped"):
            say(f"  runs skipped by the API: {answer['skipped']}")
        by_url = {feed.url: feed for feed in self.corpus.feeds}
        return [self.truth.run(by_url[run["sourceUrl"]], run["runId"]) for run in answer["runs"]]

    async def rows(self, run_ids: list[str]) -> dict[str, dict[str, Any]] | None:
        """The runs' import_logs rows, or None while the store does not answer."""
        def read() -> dict[str, dict[str, Any]]:
            return {row["runId"]: row for row in self.db.import_logs.find({"runId": {"$in": run_ids}}, {"failures": 0})}

        try:
            return await asyncio.wait_for(asyncio.to_thread(read), 20)
        except (PyMongoError, TimeoutError):
            return None

    async def wait_in_flight(self, wave: list[RunTruth]) -> str:
        """Until the wave is ``in_flight`` accounted for: the moment to strike."""
        total = sum(run.counts["totalFetched"] for run in wave)
        ids = [run.run_id for run in wave]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rows = await self.rows(ids) or {}
            done = sum(int(row.get(k) or 0) for row in rows.values() for k in COUNTS[1:])
            if rows and len(rows) == len(ids) and all(row.get("status") in FINISHED for row in rows.values()):
                return f"LATE: all runs final before the fault ({done:,}/{total:,})"
            if done >= self.plan.in_flight * total:
                return f"at {done:,}/{total:,} items accounted"
            await asyncio.sleep(0.25)
        return f"no progress to {self.plan.in_flight:.0%} within 300s"

    async def inject(self, fault: str, round_no: int) -> str:
        s = self.stack
        if fault == "worker-kill":
            victim = s.workers[(round_no - 1) % len(s.workers)]
            victim.kill9()
            await asyncio.sleep(1)
            orphans = victim.leftovers()
            note = f"killed {victim.name}"
            if orphans:
                names = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
                         for pid in orphans if Path(f"/proc/{pid}").exists()]
                note += f"; its processes {orphans} outlived it by 1s (killed now): {names}"
                self.problems.append(f"processes {orphans} of the killed {victim.name} outlived it: {names}")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(victim.pid or 0, signal.SIGKILL)
            await asyncio.sleep(DOWN_SECONDS)
            await s.start(victim)
            return note
        if fault in ("kafka-kill", "store-kill"):
            child = s.kafka if fault == "kafka-kill" else s.ferretdb
            child.kill9()
            await asyncio.sleep(DOWN_SECONDS)
            await s.start(child)
            return f"{child.name} down {DOWN_SECONDS:.0f}s"
        if fault == "store-stop":
            s.ferretdb.signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(self.plan.store_pause)
            finally:
                s.ferretdb.signal(signal.SIGCONT)
            return f"ferretdb stopped {self.plan.store_pause:.0f}s"
        if fault == "api-restart":
            before, reloaded = self.sse.connections, len(self.sse.reloaded)
            if not self.sse.connected.is_set():
                self.problems.append("the SSE client was not connected before the API restart")
                return "SSE client not connected"
            how = signal.SIGTERM if round_no % 2 else signal.SIGKILL
            s.api.expected_down = True
            s.api.signal(how)
            for _ in range(150):  # a graceful shutdown closes the streams first (at most ~10 s)
                if not s.api.alive():
                    break
                await asyncio.sleep(0.2)
            else:
                s.api.kill9()
            await s.start(s.api)
            deadline = time.monotonic() + 30
            while self.sse.connections <= before and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if self.sse.connections <= before:
                self.problems.append("the SSE client did not reconnect within 30 s of the API restart")
                return f"api {how.name}, SSE client DID NOT reconnect"
            return (f"api {how.name}, SSE client reconnected ({self.sse.resyncs} resync(s) so far; "
                    f"{len(self.sse.reloaded) - reloaded} final run(s) reloaded over REST at reconnection)")
        raise ValueError(fault)

    async def at_request(self, fault: str, round_no: int) -> tuple[list[RunTruth], str]:
        """Request the wave's runs and change the group at that very moment; return the wave and what was done.

        - worker-join: one worker runs; the other starts as the runs are requested (the group rebalances
          while the poller takes the commands).
        - worker-leave: both run; one is stopped gracefully (SIGTERM) as the runs are requested.
        - worker-kill-early: both run; one is killed -9 1-5 s after the request, restarted 2 s later.
        - join-then-kill: worker-join, and the worker that was already there is killed -9 1-5 s after the
          request (while the other joins, or just after) and restarted 2 s after that: two rebalances back to back.
        """
        s = self.stack
        rng = self.corpus.rng
        joining, other = s.workers[round_no % 2], s.workers[(round_no + 1) % 2]
        if fault in ("worker-join", "join-then-kill"):
            await asyncio.to_thread(joining.stop)  # off the loop: the feed server must keep answering
            await s.settled()
            start = asyncio.create_task(s.start(joining))
            lead = rng.uniform(0, 6)  # a worker takes a few seconds to join: requests land before, during or after
            await asyncio.sleep(lead)
            wave = await self.request_runs()
            # The kill counts from the request, not from the join's end: waiting for the joining worker to be
            # ready first made every kill strike a wave already final.
            killing = asyncio.create_task(self.kill_soon(other, wave)) if fault == "join-then-kill" else None
            await start
            note = f"{joining.name} joining, {len(wave)} runs requested {lead:.1f}s after its start"
            if killing is not None:
                delay, progress = await killing
                note += f"; {other.name} killed -9 {delay:.1f}s after the request ({progress}) and restarted 2s after"
            return wave, note
        wave = await self.request_runs()
        if fault == "worker-leave":
            await asyncio.to_thread(joining.stop)
            return wave, f"{joining.name} stopped (SIGTERM) as {len(wave)} runs were requested"
        if fault == "worker-kill-early":
            delay, progress = await self.kill_soon(joining, wave)
            return wave, (f"{joining.name} killed -9 {delay:.1f}s after {len(wave)} runs were requested ({progress}), "
                          "restarted 2s later")
        raise ValueError(fault)

    async def kill_soon(self, victim: Child, wave: list[RunTruth]) -> tuple[float, str]:
        """Kill -9 ``victim`` 1-5 s from now and restart it 2 s after that; return the delay and how far the wave was."""
        delay = self.corpus.rng.uniform(1, 5)
        await asyncio.sleep(delay)
        progress = await self.progress(wave)
        victim.kill9()
        await asyncio.sleep(2)
        await self.stack.start(victim)
        return delay, progress

    async def progress(self, wave: list[RunTruth]) -> str:
        """How far the wave is: items accounted for, and runs final."""
        total = sum(run.counts["totalFetched"] for run in wave)
        rows = await self.rows([run.run_id for run in wave]) or {}
        done = sum(int(row.get(k) or 0) for row in rows.values() for k in COUNTS[1:])
        final = sum(row.get("status") in FINISHED for row in rows.values())
        return f"at {done:,}/{total:,} items accounted, {final}/{len(wave)} runs final"

    async def check(self, wave: list[RunTruth]) -> Verdict:
        ids = [run.run_id for run in wave]
        verdict = Verdict()
        rows = await self.rows(ids) or {}
        check_runs(wave, rows, verdict)

        def scan() -> dict[str, dict[str, Any]]:
            fields = {k: 1 for k in ("version", "title", "description", "lastRunId", "sourceUrl", "externalId", "dedupeKey")}
            return {str(doc["_id"]): doc for doc in self.db.jobs.find({}, fields).batch_size(5000)}

        try:
            docs = await asyncio.wait_for(asyncio.to_thread(scan), 300)
        except (PyMongoError, TimeoutError) as exc:
            verdict.details.append(f"jobs could not be read: {exc!r}")
            return verdict
        check_jobs(self.truth, docs, verdict)
        try:
            await asyncio.wait_for(self.changes.catch_up(self.stack.bootstrap), 300)
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            verdict.details.append(f"jobs.changes could not be read: {exc!r}")
            return verdict
        check_changes(self.truth, wave, self.changes, verdict)
        check_sse(self.sse, wave, rows, verdict)
        return verdict

    def unexpected_exits(self) -> list[str]:
        """Processes of ours that died without being killed by the run (each is restarted by the caller)."""
        return [f"{child.name} exited by itself with code {child.proc.returncode if child.proc else '?'}"
                for child in self.stack.children() if not child.alive() and not child.expected_down]

    async def one(self, fault: str, round_no: int) -> Outcome:
        self.wave += 1
        if self.wave > 1:
            self.corpus.mutate(self.plan.edit, self.plan.add, self.plan.remove)
        self.publish_feeds()
        if fault in REBALANCE_FAULTS:
            wave, note = await self.at_request(fault, round_no)
            struck = time.monotonic()  # the last fault has landed
        else:
            wave = await self.request_runs()
            when = await self.wait_in_flight(wave)
            if when.startswith(("LATE", "no progress")):
                self.problems.append(f"the fault did not land mid-import ({when}): make the feeds larger (--postings)")
            struck = time.monotonic()
            note = f"{await self.inject(fault, round_no)} {when}"
        ids = [run.run_id for run in wave]
        deadline = struck + self.plan.run_timeout + 120  # a run past RUN_TIMEOUT_SECONDS is finalised within its reconcile tick
        while time.monotonic() < deadline:
            rows = await self.rows(ids)
            if rows and len(rows) == len(ids) and all(row.get("status") in FINISHED for row in rows.values()):
                break
            await asyncio.sleep(1)
        final_at = time.monotonic()
        verdict = await self.check(wave)
        for attempt in range(3):  # data may lag the final status by a moment (SSE, a slow scan): look again
            if verdict.ok or verdict.stuck:
                break
            await asyncio.sleep(5)
            final_at = time.monotonic()
            say(f"  check {attempt + 1} not exact yet ({verdict.details[:1]}); looking again")
            verdict = await self.check(wave)
        verdict.details.extend(self.unexpected_exits() + self.problems)
        self.problems = []
        for child in self.stack.children():
            if not child.alive():
                await self.stack.start(child)
        recovery = final_at - struck if verdict.ok else None
        if fault in REBALANCE_FAULTS and recovery is not None and recovery > REBALANCE_RECOVERY_SECONDS:
            verdict.details.append(f"runs final {recovery:.1f}s after the last fault (limit {REBALANCE_RECOVERY_SECONDS:.0f}s)")
            recovery = None
        expected = {k: sum(run.counts[k] for run in wave) for k in COUNTS[1:]}
        return Outcome(fault, round_no, verdict, recovery, note, expected)

    async def run(self) -> None:
        sse_task = asyncio.create_task(self.sse.run())
        try:
            await asyncio.wait_for(self.sse.connected.wait(), 30)
            for round_no in range(1, self.plan.rounds + 1):
                for fault in self.plan.faults:
                    outcome = await self.one(fault, round_no)
                    self.outcomes.append(outcome)
                    report(outcome, self.wave, self.corpus, self.stack)
        finally:
            sse_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sse_task
            self.client.close()


def report(outcome: Outcome, wave: int, corpus: Corpus, chaos_stack: ChaosStack) -> None:
    v = outcome.verdict
    recovery = f"{outcome.recovery:.1f}s" if outcome.recovery is not None else "-"
    say(f"fault={outcome.fault:<11} round={outcome.round} {'PASS' if v.ok else 'FAIL'} lost={v.lost} duplicated={v.duplicated} "
        f"miscounted={v.miscounted} stuck={v.stuck} sse_missing={v.sse_missing} recovery={recovery} "
        f"wave={wave} postings={corpus.total():,} expected new/updated/unchanged/failed="
        f"{'/'.join(f'{n:,}' for n in outcome.expected.values())} ({outcome.note})")
    for detail in v.details:
        say(f"    {detail}")
    if not v.ok:
        for child in chaos_stack.workers:
            problems = [line for line in child.log_since_start().splitlines()
                        if (" ERROR " in line and " aiokafka" not in line) or "Traceback" in line]
            for line in problems[-5:]:
                say(f"    {child.name}: {line[:300]}")


def prune(keep: int) -> None:
    """Remove older chaos run folders (this run's and the newest ``keep`` stay)."""
    runs = sorted((p for p in CHAOS_STATE.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def signals_cancel(task: asyncio.Task[Any]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def amain(plan: Plan, chaos_stack: ChaosStack, started: float) -> tuple[int, int, str]:
    """Returns (passed, failed, reason the run was cut short or '')."""
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - always inside asyncio.run
    server = FeedServer()
    await server.start()
    chaos: Chaos | None = None
    reason = ""
    with signals_cancel(task):
        try:
            url_of = {name: server.url(name) for name in Corpus.names(len(plan.sizes))}
            corpus = Corpus(list(plan.sizes), url_of)
            say(f"{len(plan.sizes)} feeds (rss/atom/rdf), {corpus.total():,} postings; {plan.rounds} round(s) of "
                f"{', '.join(plan.faults)}; store stop {plan.store_pause:.0f}s; deadline {plan.deadline / 60:.0f} min")
            await asyncio.wait_for(chaos_stack.up(), max(30.0, plan.deadline - (time.monotonic() - started)))
            chaos = Chaos(plan, chaos_stack, server, corpus)
            await asyncio.wait_for(chaos.run(), max(1.0, plan.deadline - (time.monotonic() - started)))
        except TimeoutError:
            reason = f"global deadline ({plan.deadline / 60:.1f} min) reached"
        except asyncio.CancelledError:
            reason = "interrupted by a signal"
        except Exception as exc:  # noqa: BLE001 - the run stops, says why, and still cleans up
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            await server.stop()
    outcomes = chaos.outcomes if chaos is not None else []
    passed = sum(1 for o in outcomes if o.verdict.ok)
    planned = plan.rounds * len(plan.faults)
    failed = len(outcomes) - passed + (planned - len(outcomes))
    if reason:
        say(f"stopped early: {reason}; {planned - len(outcomes)} fault(s) of {planned} not checked (counted as failed)")
    return passed, failed, reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("CHAOS_QUICK") == "1",
                        help="CI size: 1 round, 6,000 postings, a 20 s store stop (also CHAOS_QUICK=1)")
    parser.add_argument("--rebalance", action="store_true",
                        help=f"the rebalance faults ({', '.join(REBALANCE_FAULTS)}) at the moment of the request, "
                             "20 rounds (1 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds of every fault")
    parser.add_argument("--postings", type=int, help="total postings at the start (split over the feeds like the default)")
    parser.add_argument("--faults", help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--store-pause", type=float, help="seconds the store stays SIGSTOPped")
    parser.add_argument("--deadline-minutes", type=float, help="global deadline of the run")
    parser.add_argument("--keep", action="store_true", help="keep the run's Kafka/FerretDB data even when it passes")
    args = parser.parse_args()
    if args.rebalance:
        plan = REBALANCE_QUICK if args.quick else REBALANCE
    else:
        plan = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.rounds:
        overrides["rounds"] = args.rounds
    if args.postings:
        scale = args.postings / sum(plan.sizes)
        overrides["sizes"] = tuple(max(50, round(size * scale)) for size in plan.sizes)
    if args.faults:
        unknown = set(args.faults.split(",")) - set(FAULTS) - set(REBALANCE_FAULTS)
        if unknown:
            parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
        overrides["faults"] = tuple(args.faults.split(","))
    if args.store_pause is not None:
        overrides["store_pause"] = args.store_pause
    if args.deadline_minutes:
        overrides["deadline"] = args.deadline_minutes * 60
    plan = dataclasses.replace(plan, **overrides)

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # our probes of a killed broker are expected to fail
    started = time.monotonic()
    base = CHAOS_STATE / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    base.mkdir(parents=True)
    prune(KEEP_RUNS)
    chaos_stack = ChaosStack(base, plan)
    passed = failed = 0
    try:
        passed, failed, _ = asyncio.run(amain(plan, chaos_stack, started))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # cleaning up is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        chaos_stack.stop_all()
        if failed == 0 and not args.keep:
            for data in ("kafka", "ferretdb", "worker-0-data", "worker-1-data"):
                shutil.rmtree(base / data, ignore_errors=True)
        say(f"stopped everything this run started; logs{'' if failed == 0 and not args.keep else ' and data'} in {base}")
    say(f"{passed} passed, {failed} failed in {(time.monotonic() - started) / 60:.1f} min")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
