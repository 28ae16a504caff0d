"""kill -9 the worker in the middle of an import, restart it: MongoDB and the counts still end exact."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Binary

from models.registry import FeedEntry
from models.runs import FINISHED, iso
from streams.commands import aiokafka_sender, producer_for, request_runs
from streams.topics import ensure_topics
from tests.support import FeedServer, Process, mongo_db, rss, settings_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ITEMS = 30_000
# Inserts in commands of 50 rather than 500: the writes take long enough for two kills in their middle.
SLOW_WRITES = {"MONGO_INSERT_BATCH": "50"}


async def request(env: dict[str, str], url: str) -> str:
    settings = settings_of(env)
    await ensure_topics(settings)
    producer = producer_for(settings)
    await producer.start()
    try:
        [command] = await request_runs(aiokafka_sender(producer), settings, [FeedEntry(url, "crash")], "cli")
    finally:
        await producer.stop()
    return str(command["runId"])


async def test_worker_killed_twice_mid_import_still_ends_exact(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    items = [{"guid": f"crash-{i}", "title": f"Engineer {i}", "description": "<p>" + "words " * 40 + "</p>"} for i in range(ITEMS)]
    url = feed_server.put(f"{unique}-crash.xml", rss(items), conditional=False)
    db = mongo_db(pipeline_env)
    worker = start_worker(**SLOW_WRITES)
    run_id = await request(pipeline_env, url)

    def run() -> dict[str, Any] | None:
        return db.import_logs.find_one({"runId": run_id})

    # First kill: the feed is announced and postings are flowing, well before the end.
    await wait_for(lambda: (r := run()) and r["totalFetched"] == ITEMS, 120, "the feed to be announced")
    worker.kill()
    first_kill_jobs = db.jobs.count_documents({})
    worker = start_worker(**SLOW_WRITES)
    # Second kill: in the middle of the writes.
    await wait_for(lambda: db.jobs.count_documents({}) > max(first_kill_jobs, ITEMS // 10), 180, "a tenth of the writes")
    worker.kill()
    assert db.jobs.count_documents({}) < ITEMS, "the import finished before the second kill: make the feed larger"
    start_worker(**SLOW_WRITES)

    try:
        final = await wait_for(lambda: (r := run()) and r["status"] in FINISHED and r, 240, "the run to finish")
    except AssertionError as exc:
        snapshot = {k: v for k, v in (run() or {}).items() if k not in ("failures",)}
        raise AssertionError(f"{exc}; last import_logs: {snapshot}; jobs: {db.jobs.count_documents({})}") from None
    assert final["status"] == "completed", final
    assert (final["totalFetched"], final["newJobs"], final["updatedJobs"], final["unchangedJobs"], final["failedJobs"]) == (
        ITEMS, ITEMS, 0, 0, 0)
    assert db.jobs.count_documents({}) == ITEMS
    assert db.jobs.count_documents({"version": {"$ne": 1}}) == 0
    assert sorted(d["_id"] for d in db.jobs.find({}, {"_id": 1})) == sorted(d["dedupeKey"] for d in db.jobs.find({}, {"dedupeKey": 1}))

    # The dedupe table survived the crashes: a re-import is all unchanged and writes nothing.
    rerun_id = await request(pipeline_env, url)
    rerun = await wait_for(
        lambda: (r := db.import_logs.find_one({"runId": rerun_id})) and r["status"] in FINISHED and r, 240, "the re-import")
    assert (rerun["status"], rerun["unchangedJobs"], rerun["newJobs"], rerun["updatedJobs"]) == ("completed", ITEMS, 0, 0)


async def test_items_whose_events_were_lost_are_republished_and_counted(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], unique: str
) -> None:
    """Simulate the worst case: the run was announced, its payload stored, but every posting event vanished."""
    db = mongo_db(pipeline_env)
    start_worker()
    settings = settings_of(pipeline_env)
    run_id, url = f"lost-{unique}", f"https://lost.example.com/{unique}.xml"
    body = rss([{"guid": f"lost-{i}", "title": f"Lost {i}"} for i in range(5)])
    db.raw_feeds.insert_one({"_id": run_id, "runId": run_id, "sourceUrl": url, "fetchedAt": datetime.now(UTC), "httpStatus": 200,
                             "bytes": len(body), "encoding": "zlib", "payload": Binary(zlib.compress(body))})
    producer = producer_for(settings)
    await producer.start()
    try:
        send = aiokafka_sender(producer)
        now = iso(datetime.now(UTC))
        common = {"runId": run_id, "sourceUrl": url, "sourceName": "lost", "trigger": "cli", "requestedAt": now, "at": now}
        await send(settings.topic("import.progress"), run_id, {**common, "type": "started"})
        await send(settings.topic("import.progress"), run_id, {**common, "type": "fetched", "totalFetched": 5, "failures": []})
    finally:
        await producer.stop()

    final = await wait_for(lambda: (r := db.import_logs.find_one({"runId": run_id})) and r["status"] in FINISHED and r, 120,
                           "the repaired run to finish")
    assert (final["status"], final["newJobs"], final["totalFetched"]) == ("completed", 5, 5)
    assert db.jobs.count_documents({"sourceUrl": url}) == 5
