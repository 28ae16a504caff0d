"""Benchmark: first import and unchanged re-import through the real local stack, beside its ceilings.

In one run: the store's insert ceiling (raw ``insert_many`` of 500 into the same MongoDB), the
broker's ceiling (raw aiokafka produce, acks=all, and consume of the same documents as JSON), then
the pipeline importing ``--feeds`` feeds of ``--items`` postings each, first import and unchanged
re-import, with the ratio of each to the ceilings, each worker's peak RSS, and where the CPU went:
seconds and microseconds per posting of the store, the broker, each worker and its parse processes,
and how busy the machine's cores were (a phase with no idle core is bound by the CPU, whatever the
ceilings say). ``--workers N`` (default the core count, as ``make run``) starts N workers sharing
the partitions. ``--profile DIR`` records py-spy profiles (worker and parse processes) and prints
the top own-time frames. ``--format indeed`` serves the same postings as Indeed-style job XML feeds
(SPEC §3a), to set the job XML path beside RSS. Prints figures; asserts nothing about speed.

Usage: .venv/bin/python deploy/bench.py [--feeds 100 --items 1000] [--workers 2] [--profile .artifacts/profile]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from agents.sink import write_batch  # noqa: E402
from models.feed import JobPosting, dedupe_key, parse_feed  # noqa: E402
from models.postings import change_event, job_insert, posting_json  # noqa: E402
from models.registry import FeedEntry  # noqa: E402
from streams.cli import import_feeds  # noqa: E402
from streams.settings import parse_memory_needed_mb  # noqa: E402
from streams.store import Store  # noqa: E402
from tests.support import (  # noqa: E402
    WORKER_READY,
    FeedServer,
    Process,
    delete_topics,
    free_port,
    isolated_env,
    mongo_db,
    rss,
    settings_of,
)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, below: bool = True) -> float:
    """CPU time of ``pid`` and every process below it, live or already reaped (utime+stime+cutime+cstime);
    with ``below=False``, of ``pid`` alone (a worker without its parse processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat") if below else ():
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # Fields after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based here.
        total += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if current == pid and below else 0)
        todo.extend(children.get(current, []))
    return total / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) core-seconds of the machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def stack_pid(name: str) -> int | None:
    """The PID ``deploy/stack.py`` recorded for a service, if it runs (the bench does not start the stack)."""
    try:
        pid = int((ROOT / ".state" / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def cpu_sample(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds per process tree so far; for a worker also its own (``worker-0 own``: without its parse processes)."""
    sample = {label: cpu_seconds(pid) for label, pid in pids.items()}
    sample.update({f"{label} own": cpu_seconds(pid, below=False) for label, pid in pids.items() if label.startswith("worker")})
    return sample


def cpu_report(before: dict[str, float], after: dict[str, float], busy: tuple[float, float], wall: float, total: int) -> str:
    """Where the CPU went in a phase: seconds and microseconds per posting for each process tree."""
    def spent(label: str) -> float:
        return after[label] - before[label]

    rows = [f"{label} {spent(label):.1f}s ({spent(label) / total * 1e6:.0f} us/posting"
            + (f", parse processes {(spent(label) - spent(f'{label} own')) / total * 1e6:.0f})" if f"{label} own" in before else ")")
            for label in before if not label.endswith(" own")]
    cores = os.cpu_count() or 1
    used = busy[0] / wall
    return f"  cpu: {'; '.join(rows)}; machine {used:.2f} of {cores} cores busy ({used / cores:.0%})"


def profiler(folder: Path, label: str, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker and its parse processes until interrupted (collapsed stacks).

    ``--nonblocking``: py-spy does not stop the processes to sample them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--format", "raw",  # noqa: S603
                             "--rate", "50", "--nonblocking", "--pid", str(pid), "--output", str(folder / f"{label}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_costs(path: Path, count: int = 8) -> str:
    """The functions with the most samples on top of the stack (own time), from collapsed stacks."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, samples = line.rpartition(" ")
        own[stack.split(";")[-1]] += int(samples)
        total += int(samples)
    rows = [f"    {n / total:6.1%}  {frame[:110]}" for frame, n in own.most_common(count)] if total else ["    (no samples)"]
    return f"  top own-time frames ({path.name}, {total} samples):\n" + "\n".join(rows)


def feed_items(feed: int, items: int) -> list[dict[str, Any]]:
    return [{"guid": f"job-{feed}-{i}", "title": f"Engineer {i}", "company": f"Company {i % 997}",
             "description": "<p>Build things. " + "Lorem ipsum dolor sit amet. " * 8 + "</p>"} for i in range(items)]


def indeed(items: list[dict[str, Any]]) -> bytes:
    """The same postings as an Indeed-style job XML feed (SPEC §3a ``indeed``): CDATA text, as job boards write it."""
    parts = ['<?xml version="1.0" encoding="utf-8"?><source><publisher>Bench</publisher>'
             "<publisherurl>https://example.com</publisherurl>"]
    for item in items:
        parts.append(
            f"<job><title><![CDATA[{item['title']}]]></title><date><![CDATA[Mon, 06 Jan 2025 10:00:00 +0000]]></date>"
            f"<referencenumber><![CDATA[{item['guid']}]]></referencenumber>"
            f"<url><![CDATA[https://example.com/jobs/{item['guid']}]]></url><company><![CDATA[{item['company']}]]></company>"
            "<city><![CDATA[Lyon]]></city><state><![CDATA[ARA]]></state><country><![CDATA[FR]]></country>"
            f"<description><![CDATA[{item['description']}]]></description><jobtype><![CDATA[fulltime]]></jobtype>"
            "<category><![CDATA[Engineering]]></category></job>")
    parts.append("</source>")
    return "".join(parts).encode()


FEED_BUILDERS = {"rss": rss, "indeed": indeed}


def sample_changes(body: bytes, url: str) -> list[dict[str, Any]]:
    """The change events the pipeline would write for a feed: the ceilings move the same documents."""
    parsed = [posting_json(p) for p in parse_feed(body, url, "bench").items if isinstance(p, JobPosting)]
    return [change_event({**doc, "runId": "ceiling", "seq": i}, "created", 1, "2025-01-06T10:00:00Z") for i, doc in enumerate(parsed)]


def store_ceiling(mongo_url: str, changes: list[dict[str, Any]], total: int) -> float:
    """Raw ``insert_many`` of 500 ``jobs``-shaped documents into a scratch database: documents/s."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    db = client[f"ceiling_{uuid.uuid4().hex[:8]}"]
    try:
        written, started = 0, time.perf_counter()
        while written < total:
            size = min(500, total - written)
            batch = [{**job_insert(changes[(written + i) % len(changes)]), "_id": f"c{written + i}"} for i in range(size)]
            db.jobs.insert_many(batch, ordered=False)
            written += len(batch)
        return total / (time.perf_counter() - started)
    finally:
        client.drop_database(db.name)
        client.close()


async def write_set_ceiling(env: dict[str, str], changes: list[dict[str, Any]], total: int, writers: int) -> float:
    """The sink's own store writes (``agents.sink.write_batch``: ``jobs`` and ``job_search`` inserts with every
    index the project creates) of ``total`` created postings, ``writers`` sinks at once, nothing else: postings/s.

    This is the store's ceiling for what the pipeline writes, beside the raw one (one collection, no
    secondary index, sequential ids): a first import cannot be faster than its own writes.
    """
    settings = settings_of({**env, "MONGO_DB": f"ceiling_{uuid.uuid4().hex[:8]}"})
    stores = [Store(settings) for _ in range(writers)]
    await stores[0].ensure_indexes()

    def created(i: int) -> dict[str, Any]:
        change = changes[i % len(changes)]
        return {**change, "seq": i, "job": {**change["job"], "dedupeKey": dedupe_key("ceiling", str(i))}}

    async def sink(store: Store, first: int) -> None:
        for start in range(first, total, WRITE_SET_BATCH * writers):
            await write_batch(store, [created(i) for i in range(start, min(total, start + WRITE_SET_BATCH))])

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sink(store, w * WRITE_SET_BATCH) for w, store in enumerate(stores)))
        return total / (time.perf_counter() - started)
    finally:
        await stores[0].client.drop_database(settings.mongo_db)
        for store in stores:
            await store.close()


WRITE_SET_BATCH = 2000  # changes per sink batch (the sink's batches in a first import are of this order)


async def broker_ceiling(bootstrap: str, changes: list[dict[str, Any]], total: int, partitions: int) -> float:
    """Raw aiokafka: produce (acks=all) and consume ``total`` of the documents as JSON: documents/s."""
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    values = [json.dumps(change).encode() for change in changes]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024)
    await producer.start()
    await consumer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, values[i % len(values)], key=f"k{i}".encode(), partition=i % partitions)
                   for i in range(total)]
        await asyncio.gather(*futures)
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        received = 0
        while received < total:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                received += sum(1 for record in records if json.loads(record.value or b"null"))
        return total / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.delete_topics([topic])
        await admin.close()


async def message_counts(env: dict[str, str]) -> Counter[str]:
    """Messages in each of the pipeline's topics and changelogs so far (sum of the partitions' end offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    consumer = AIOKafkaConsumer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    await consumer.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith((env["TOPIC_PREFIX"], env["APP_ID"] + "-"))]
        partitions = [TopicPartition(topic["topic"], p["partition"]) for topic in await admin.describe_topics(ours)
                      for p in topic["partitions"]]
        counts: Counter[str] = Counter()
        for tp, end in (await consumer.end_offsets(partitions)).items():
            counts[tp.topic.removeprefix(env["TOPIC_PREFIX"]).removeprefix(env["APP_ID"] + "-")] += end
        return counts
    finally:
        await consumer.stop()
        await admin.close()


async def small_feed_latency(env: dict[str, str], server: FeedServer, runs: int) -> None:
    """Request to completed in ``import_logs`` (the run's own timestamps) for a 100-item feed, one run at a time."""
    db = mongo_db(env)
    took: list[float] = []
    for i in range(runs):
        url = server.put(f"small-{i}.xml", rss(feed_items(10_000 + i, 100)), conditional=False)
        [run] = (await import_feeds(settings_of(env), [FeedEntry(url, "small")], 120, io.StringIO())).values()
        row = db.import_logs.find_one({"_id": run["runId"]}) or {}
        if row.get("status") == "completed" and row.get("finishedAt") and row.get("requestedAt"):
            took.append((row["finishedAt"] - row["requestedAt"]).total_seconds())
    took.sort()
    if took:
        p95 = took[min(len(took) - 1, round(0.95 * (len(took) - 1)))]
        print(f"100-item feed, request to completed: p50 {took[len(took) // 2]:.2f}s p95 {p95:.2f}s max {took[-1]:.2f}s "
              f"({len(took)} of {runs} runs completed)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--feeds", type=int, default=1)
    parser.add_argument("--items", type=int, default=100_000, help="postings per feed")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: the core count)")
    parser.add_argument("--small-runs", type=int, default=0, help="then time this many runs of a 100-item feed, one at a time")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the worker (and its parse processes) here")
    parser.add_argument("--reimports", type=int, default=1, help="unchanged re-import rounds (more show the run-to-run spread)")
    parser.add_argument("--format", choices=sorted(FEED_BUILDERS), default="rss",
                        help="the feeds' format: RSS 2.0, or the same postings as Indeed-style job XML (read as format indeed)")
    args = parser.parse_args()
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongo_url = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017")
    total = args.feeds * args.items
    workdir = Path(tempfile.mkdtemp(prefix="jobstream-bench-"))
    env = isolated_env(kafka, mongo_url, f"bench{uuid.uuid4().hex[:8]}", workdir,
                       TOPIC_PARTITIONS=str(args.partitions), BATCH_SIZE=str(args.batch_size), BATCH_WINDOW_SECONDS="1.0",
                       LOG_LEVEL="INFO", REPAIR_AFTER_SECONDS="60")
    bodies = [FEED_BUILDERS[args.format](feed_items(f, args.items)) for f in range(args.feeds)]
    env["MAX_FEED_BYTES"] = str(max(50 * 1024 * 1024, 2 * max(map(len, bodies))))  # a 1M-posting feed is ~0.5 GB
    # A parse process holds its feed, then parses it (streams.settings.parse_memory_needed_mb): the limit follows the feeds.
    env["PARSE_MAX_MEMORY_MB"] = str(max(512, parse_memory_needed_mb(int(env["MAX_FEED_BYTES"]))))
    env["PARSE_TIMEOUT_SECONDS"] = "900"  # the parse of 1M postings takes 90 s on a quiet machine, more beside other work
    server = FeedServer()
    await server.start()
    urls = [server.put(f"bench-{f}.xml", body, conditional=False) for f, body in enumerate(bodies)]
    print(f"{args.feeds} feed(s) x {args.items:,} postings = {total:,} postings, {sum(map(len, bodies)) / 1e6:.1f} MB; "
          f"partitions={args.partitions}; format {args.format}", flush=True)
    changes = sample_changes(rss(feed_items(0, 2000)), urls[0])
    ceiling_n = min(total, 100_000)
    store = store_ceiling(mongo_url, changes, ceiling_n)
    print(f"store ceiling:  {store:9,.0f} docs/s (raw insert_many of 500, {ceiling_n:,} documents)", flush=True)
    writes = await write_set_ceiling(env, changes, ceiling_n, args.workers)
    print(f"store ceiling for the pipeline's writes: {writes:9,.0f} postings/s (agents.sink.write_batch alone: jobs + job_search "
          f"with their indexes, {args.workers} sink(s) at once, {ceiling_n:,} postings)", flush=True)
    broker = await broker_ceiling(kafka, changes, ceiling_n, args.partitions)
    print(f"broker ceiling: {broker:9,.0f} docs/s (raw aiokafka produce acks=all + consume, JSON, {ceiling_n:,} documents)", flush=True)
    workers = [Process("worker", {**env, "WORKER_METRICS_PORT": str(free_port()), "DATA_DIR": str(workdir / f"worker-{i}")},
                       workdir / f"worker-{i}.log") for i in range(args.workers)]
    try:
        pids: dict[str, int] = {}
        for i, worker in enumerate(workers):
            worker.start(WORKER_READY)
            if worker.proc is None:
                raise RuntimeError("worker did not start")
            pids[f"worker-{i}"] = worker.proc.pid
        for service, label in (("ferretdb", "store"), ("kafka", "broker")):
            pid = stack_pid(service)
            if pid is not None:
                pids[label] = pid
        rounds = ["first import"] + [f"re-import (unchanged){f' #{n + 1}' if args.reimports > 1 else ''}" for n in range(args.reimports)]
        for number, label in enumerate(rounds):
            name = label.split()[0] + (f"{number}" if number > 1 else "")
            spies = [profiler(args.profile, f"{name}-{i}" if i else name, pid)
                     for i, pid in enumerate(pid for key, pid in pids.items() if key.startswith("worker"))] if args.profile else []
            messages_before = await message_counts(env)
            cpu_before, busy_before = cpu_sample(pids), machine_busy()
            started = time.perf_counter()
            runs = await import_feeds(settings_of(env), [FeedEntry(url, url.rsplit("/", 1)[-1], format=args.format) for url in urls],
                                      3600, io.StringIO())
            elapsed = time.perf_counter() - started
            cpu_after, busy_after = cpu_sample(pids), machine_busy()
            counts: Counter[str] = Counter()
            for run in runs.values():
                counts.update({k: int(run.get(k) or 0) for k in ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs")})
                counts[run["status"]] += 1
            if counts["completed"] != len(runs):
                errors = {run.get("error") for run in runs.values() if run["status"] != "completed"}
                print(f"{label:22} not every run completed: {dict(counts)}; errors: {errors}", flush=True)
                break
            rate = total / elapsed
            parse_seconds = sum(float((run.get("meta") or {}).get("parseSeconds") or 0) for run in runs.values())
            print(f"{label:22} {rate:8,.0f} postings/s = {rate / store:.2f}x store, {rate / writes:.2f}x the pipeline's writes, "
                  f"{rate / broker:.2f}x broker; wall {elapsed:.1f}s; "
                  f"runs {dict((k, v) for k, v in counts.items() if not k.endswith('Jobs'))}; "
                  f"new={counts['newJobs']} updated={counts['updatedJobs']} unchanged={counts['unchangedJobs']} "
                  f"failed={counts['failedJobs']}; parse wait {parse_seconds:.1f}s; peak RSS "
                  + ", ".join(f"worker-{i} {peak_rss_mib(worker.proc.pid):.0f} MiB" for i, worker in enumerate(workers) if worker.proc),
                  flush=True)
            print(cpu_report(cpu_before, cpu_after, (busy_after[0] - busy_before[0], busy_after[1] - busy_before[1]), elapsed, total))
            messages = await message_counts(env) - messages_before
            print("  messages: " + ", ".join(f"{topic} {n:,}" for topic, n in sorted(messages.items()) if n), flush=True)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            for i, _ in enumerate(spies):
                print(top_costs(args.profile / (f"{name}-{i}.txt" if i else f"{name}.txt")))
        print(f"jobs in MongoDB: {mongo_db(env).jobs.estimated_document_count():,}")
        if args.small_runs:
            await small_feed_latency(env, server, args.small_runs)
    finally:
        for worker in workers:
            worker.stop()
        await server.stop()
        mongo_db(env).client.drop_database(env["MONGO_DB"])
        await delete_topics(env)


if __name__ == "__main__":
    asyncio.run(main())
