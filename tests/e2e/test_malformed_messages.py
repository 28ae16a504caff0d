"""Malformed messages on every topic the agents read cannot stop a worker or cost a posting (issue 22).

Measured before the fix: 9 malformed values on each of ``commands``, ``jobs.parsed``, ``jobs.upserts``
and ``import.progress`` during an import of 4 x 3,000 postings crashed the dedupe, poller and sink
agents; none of the runs was final 600 s later and 2,220 of 12,000 postings were stored. Here the
same kinds of value go to the real broker while two real workers import four feeds: the workers keep
their PIDs, every run is exact, ``jobs`` holds every posting, and ``jobs.dlq`` holds one decode record
per bad message, naming where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from models.registry import FeedEntry
from models.runs import iso, run_request
from streams.cli import import_feeds
from streams.commands import producer_for
from tests.e2e.test_pipeline import assert_invariant, counts, postings
from tests.support import FeedServer, Process, free_port, mongo_db, rss, settings_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FEEDS, ITEMS = 4, 400
AT = iso(datetime.now(UTC))
POSTING = {"dedupeKey": "k", "sourceUrl": "https://x/f", "sourceName": "x", "externalId": "e", "title": "t", "company": "c",
           "location": "", "jobType": "", "categories": [], "region": "", "url": "", "description": "",
           "publishedAt": None, "fingerprint": "f", "seq": 0}
CHANGE = {"type": "created", "runId": "r-bad", "seq": 0, "version": 1, "fingerprint": "f", "occurredAt": AT,
          "job": {k: v for k, v in POSTING.items() if k != "seq"}}
COMMON: list[bytes | None] = [b"not json", b"", None, b"[1, 2]", b'{"type": 5}']
BAD: dict[str, list[Any]] = {
    "commands": [*COMMON, {"runId": "r-bad"}, {**run_request("https://x/f", "x", "manual", datetime.now(UTC)), "requestedAt": "then"},
                 {**run_request("https://x/f", "x", "manual", datetime.now(UTC)), "repairSeqs": [10**11]},
                 {**run_request("https://x/f", "x", "manual", datetime.now(UTC)), "trigger": 7}],
    "jobs.parsed": [*COMMON, {"type": "postings", "runId": "r-bad", "fetchedAt": AT, "items": [{**POSTING, "seq": 10**11}]},
                    {"type": "postings", "runId": "r-bad", "fetchedAt": "soon", "items": [POSTING]},
                    {"type": "postings", "runId": "r-bad", "fetchedAt": AT, "items": [{"seq": 0}]},
                    {"type": "unknown", "runId": "r-bad"}],
    "jobs.upserts": [*COMMON, {"type": "changes", "items": [{**CHANGE, "seq": 10**11}]},
                     {"type": "changes", "items": [{**CHANGE, "occurredAt": "now"}]},
                     {"type": "changes", "items": [{**CHANGE, "version": "1"}]}, {"items": "all"}],
    "import.progress": [*COMMON, {"type": "outcomes", "runId": "r-bad", "at": "not a time", "items": []},
                        {"type": "outcomes", "runId": "r-bad", "at": AT, "items": [], "seqs": {"created": [10**11]}},
                        {"type": "launched", "runId": "r-bad", "at": AT},
                        {"type": "fetched", "runId": "r-bad", "at": AT, "totalFetched": 10**11, "failures": []}],
}


async def produce_bad(env: dict[str, str]) -> int:
    settings = settings_of(env)
    producer = producer_for(settings)
    await producer.start()
    try:
        sent = 0
        for topic, values in BAD.items():
            for value in values:
                raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
                await producer.send_and_wait(settings.topic(topic), key=f"bad-{sent}".encode(), value=raw)
                sent += 1
        return sent
    finally:
        await producer.stop()


async def dlq_records(env: dict[str, str], expected: int) -> list[dict[str, Any]]:
    settings = settings_of(env)
    consumer = AIOKafkaConsumer(settings.topic("jobs.dlq"), bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=1000)
            records.extend(orjson.loads(message.value) for messages in batch.values() for message in messages)
            return len(records) >= expected
        await wait_for(enough, 60, f"{expected} jobs.dlq records")
        batch = await consumer.getmany(timeout_ms=2000)  # and no more than that
        records.extend(orjson.loads(message.value) for messages in batch.values() for message in messages)
    finally:
        await consumer.stop()
    return records


async def test_malformed_messages_on_every_topic_stop_no_worker_and_lose_no_posting(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, tmp_path: Path
) -> None:
    workers = [start_worker(), start_worker(WORKER_METRICS_PORT=str(free_port()), DATA_DIR=str(tmp_path / "second-worker"))]
    pids = [worker.proc.pid for worker in workers if worker.proc is not None]
    urls = [feed_server.put(f"{unique}-m{n}.xml", rss(postings(ITEMS, prefix=f"m{n}")), conditional=False) for n in range(FEEDS)]
    importing = asyncio.ensure_future(import_feeds(settings_of(pipeline_env), [FeedEntry(url, url) for url in urls], 180.0,
                                                   __import__("io").StringIO()))
    sent = await produce_bad(pipeline_env)  # while the runs are requested, fetched and published
    runs = await importing
    assert sent == sum(len(values) for values in BAD.values())

    db = mongo_db(pipeline_env)
    for run_id in runs:
        doc = db.import_logs.find_one({"runId": run_id}, {"_id": 0})
        assert doc is not None
        assert_invariant(doc)
        assert counts(doc) == (ITEMS, ITEMS, 0, 0, 0), doc
    assert db.jobs.count_documents({"sourceUrl": {"$in": urls}}) == FEEDS * ITEMS
    assert db.jobs.count_documents({"sourceUrl": "https://x/f"}) == 0, "nothing of a refused message was written"

    records = await dlq_records(pipeline_env, sent)
    decode = [record for record in records if record["stage"] == "decode"]
    assert len(decode) == len(records), "every record is a decode record"
    # One record per bad message, named by where it was. Delivery is at-least-once: a batch redelivered after
    # a rebalance repeats its records, with the same topic, partition and offset (consumers dedupe on those).
    places = {(r["topic"], r["partition"], r["offset"]) for r in decode}
    assert len(places) == sent, records
    by_topic = {topic: sum(place[0] == settings_of(pipeline_env).topic(topic) for place in places) for topic in BAD}
    assert by_topic == {topic: len(values) for topic, values in BAD.items()}
    for record in decode:  # a repeat is the same record
        assert [r for r in decode if r["offset"] == record["offset"] and r["topic"] == record["topic"]
                and r["partition"] == record["partition"]][0] == record
    assert all(r["reason"] for r in decode)

    assert [worker.proc.poll() if worker.proc else "gone" for worker in workers] == [None, None], "both workers are up"
    assert [worker.proc.pid for worker in workers if worker.proc is not None] == pids
    for worker in workers:
        log = worker.log_path.read_text(errors="replace")
        assert "crashed" not in log.lower() and "Traceback" not in log, worker.log_tail()
