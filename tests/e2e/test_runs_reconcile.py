"""No run stays unfinished in import_logs (issue 9): a real worker, Kafka and the store.

The crash window between the runs-table write and the import_logs projection is reproduced by
putting a finished run's row back to ``running`` (what the store holds when the worker died there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.runs import FINISHED, iso
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
