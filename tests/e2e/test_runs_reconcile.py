"""No run stays unfinished in import_logs (issue 9): a real worker, Kafka and the store.

The crash window between the runs-table write and the import_logs projection is reproduced by
putting a finished run's row back to ``running`` (what the store holds when the worker died there).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.runs import FINISHED, iso
from streams.app import changelog_topic
from streams.commands import aiokafka_sender, producer_for
from streams.topics import ensure_topics
from tests.support import Process, mongo_db, settings_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNTERS = ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs")


async def send_progress(env: dict[str, str], *events: dict[str, Any]) -> None:
    settings = settings_of(env)
    await ensure_topics(settings)
    producer = producer_for(settings)
    await producer.start()
    try:
        send = aiokafka_sender(producer)
        for event in events:
            await send(settings.topic("import.progress"), event["runId"], event)
    finally:
        await producer.stop()


async def test_unfinished_rows_are_reprojected_or_finalised(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], unique: str
) -> None:
    env = {**pipeline_env, "RUN_TIMEOUT_SECONDS": "20"}
    db = mongo_db(env)
    start_worker(RUN_TIMEOUT_SECONDS="20")
    run_id, url, now = f"done-{unique}", f"https://x.example.com/{unique}.xml", iso(datetime.now(UTC))
    common = {"runId": run_id, "sourceUrl": url, "sourceName": "x", "trigger": "cli", "requestedAt": now, "at": now}
    fetched = {**common, "type": "fetched", "totalFetched": 0, "failures": [], "meta": {"httpStatus": 304, "notModified": True}}
    await send_progress(env, {**common, "type": "started"}, fetched)

    def row(rid: str = run_id) -> dict[str, Any] | None:
        return db.import_logs.find_one({"_id": rid})

    await wait_for(lambda: (r := row()) and r["status"] == "completed", 60, "the run to complete")

    # 1. The table holds the finished run, import_logs does not; the replayed event must re-project it.
    db.import_logs.update_one({"_id": run_id}, {"$set": {"status": "running", "finishedAt": None}})
    await send_progress(env, fetched)
    await wait_for(lambda: (r := row()) and r["status"] == "completed", 4, "the replay to re-project the finished run")

    # 2. Nothing replayed at all: the reconciliation timer finds the row and the table's state wins.
    db.import_logs.update_one({"_id": run_id}, {"$set": {"status": "running", "finishedAt": None}})
    final = await wait_for(lambda: (r := row()) and r["status"] == "completed" and r, 30, "reconciliation of a finished run")
    assert final["finishedAt"] is not None and final["totalFetched"] == 0

    # 3. A row the runs table never knew (lost), past RUN_TIMEOUT_SECONDS: failed, the rest counted as failed.
    lost, long_ago = f"lost-{unique}", datetime.now(UTC) - timedelta(hours=1)
    db.import_logs.insert_one({"_id": lost, "runId": lost, "sourceUrl": url, "fileName": url, "sourceName": "x",
                               "trigger": "schedule", "status": "running", "requestedAt": long_ago, "startedAt": long_ago,
                               "totalFetched": 5, "newJobs": 1, "updatedJobs": 0, "unchangedJobs": 1, "failedJobs": 0,
                               "failures": [], "failuresTruncated": False, "meta": {"batches": 1}})
    failed = await wait_for(lambda: (r := row(lost)) and r["status"] in FINISHED and r, 30, "the lost run to be finalised")
    assert failed["status"] == "failed" and "did not know the run" in failed["error"]
    assert (failed["totalFetched"], *(failed[c] for c in COUNTERS)) == (5, 1, 0, 1, 3)
    assert failed["sourceUrl"] == url and failed["finishedAt"] is not None

    # 4. A finished row is never replaced: a late event for an unknown run does not reopen it.
    await send_progress(env, {"type": "outcomes", "runId": lost, "at": iso(datetime.now(UTC)),
                              "items": [{"seq": 4, "outcome": "created"}], "batch": True})
    await send_progress(env, {"type": "timeout", "runId": lost, "at": iso(datetime.now(UTC)), "afterSeconds": 1})
    await asyncio.sleep(3)
    again = row(lost)
    assert again is not None and again["status"] == "failed" and again["failedJobs"] == 3 and again["sourceUrl"] == url


async def runs_changelog(env: dict[str, str], run_id: str) -> list[bytes | None]:
    """Every value the runs table's changelog holds for ``run_id`` (keys are JSON), oldest first; None is a deletion."""
    settings = settings_of(env)
    topic = changelog_topic(settings, "runs")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes | None] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values.extend(record.value for record in records if record.key == json.dumps(run_id).encode())
        return values
    finally:
        await consumer.stop()


async def test_finished_runs_leave_the_table_after_retention_and_late_events_do_not_bring_them_back(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], unique: str
) -> None:
    retention = {"RUNS_RETENTION_HOURS": "0.0003"}  # about a second
    env = {**pipeline_env, **retention}
    db = mongo_db(env)
    worker = start_worker(**retention)
    run_id, url, now = f"old-{unique}", f"https://x.example.com/{unique}.xml", iso(datetime.now(UTC))
    common = {"runId": run_id, "sourceUrl": url, "sourceName": "x", "trigger": "cli", "requestedAt": now, "at": now}
    await send_progress(env, {**common, "type": "started"},
                        {**common, "type": "fetched", "totalFetched": 0, "failures": [], "meta": {"httpStatus": 304}})
    await wait_for(lambda: (r := db.import_logs.find_one({"_id": run_id})) and r["status"] == "completed", 60, "the run")
    assert (await runs_changelog(env, run_id))[-1] is not None, "the finished run is in the table"

    # The table scan (at a worker's first timer tick, then every few minutes) expires it.
    worker.stop()
    await asyncio.sleep(1.5)
    start_worker(**retention)
    deadline = asyncio.get_running_loop().time() + 40
    while (values := await runs_changelog(env, run_id))[-1] is not None:
        assert asyncio.get_running_loop().time() < deadline, f"the run was not expired from the table: {values[-3:]}"
        await asyncio.sleep(2)

    # A late event of the expired run: no phantom run in the table, the import_logs row as it was.
    await send_progress(env, {"type": "outcomes", "runId": run_id, "at": iso(datetime.now(UTC)),
                              "items": [{"seq": 0, "outcome": "created"}], "batch": True})
    await asyncio.sleep(3)
    assert (await runs_changelog(env, run_id))[-1] is None
    row = db.import_logs.find_one({"_id": run_id})
    assert row is not None and row["status"] == "completed" and row["newJobs"] == 0, "import_logs keeps the run as it ended"
