"""The whole pipeline for real: feed server → worker subprocess (Kafka, Faust tables) → FerretDB."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from models.registry import FeedEntry
from models.runs import FINISHED
from streams.cli import import_feeds
from tests.conftest import SAMPLE_FEEDS
from tests.support import FeedServer, Process, free_port, mongo_db, rss, settings_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNTERS = ("newJobs", "updatedJobs", "unchangedJobs", "failedJobs")


async def run_import(env: dict[str, str], *urls: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Trigger runs like `jobstream import` does and return their finished import_logs documents."""
    runs = await import_feeds(settings_of(env), [FeedEntry(url, url.rsplit("/", 1)[-1]) for url in urls], timeout, io.StringIO())
    assert all(run["status"] in FINISHED for run in runs.values()), runs
    db = mongo_db(env)
    docs = [db.import_logs.find_one({"runId": run_id}, {"_id": 0}) for run_id in runs]
    assert all(doc is not None for doc in docs)
    for doc in docs:
        assert_invariant(doc)  # type: ignore[arg-type]
    return [doc for doc in docs if doc is not None]


def assert_invariant(doc: dict[str, Any]) -> None:
    assert doc["status"] in FINISHED
    assert doc["totalFetched"] == sum(doc[c] for c in COUNTERS), doc
    assert doc["totalImported"] == doc["newJobs"] + doc["updatedJobs"]
    assert doc["fileName"] == doc["sourceUrl"]
    assert doc["finishedAt"] is not None and doc["durationMs"] is not None and doc["durationMs"] >= 0


def counts(doc: dict[str, Any]) -> tuple[int, ...]:
    return (doc["totalFetched"], *(doc[c] for c in COUNTERS))


def postings(n: int, prefix: str = "job", description: str = "A job.") -> list[dict[str, Any]]:
    return [{"guid": f"{prefix}-{i}", "title": f"Engineer {i}", "description": description} for i in range(n)]


async def test_first_import_reimport_and_update_are_exact(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-a.xml", rss(postings(30)), conditional=False)
    db = mongo_db(pipeline_env)

    [first] = await run_import(pipeline_env, url)
    assert first["status"] == "completed"
    assert counts(first) == (30, 30, 0, 0, 0)
    assert db.jobs.count_documents({"sourceUrl": url}) == 30
    before = {d["dedupeKey"]: (d["version"], d["updatedAt"]) for d in db.jobs.find({}, {"dedupeKey": 1, "version": 1, "updatedAt": 1})}
    assert set(v for v, _ in before.values()) == {1}

    [again] = await run_import(pipeline_env, url)
    assert counts(again) == (30, 0, 0, 30, 0)
    after = {d["dedupeKey"]: (d["version"], d["updatedAt"]) for d in db.jobs.find({}, {"dedupeKey": 1, "version": 1, "updatedAt": 1})}
    assert after == before, "an unchanged re-import must not write"

    changed = postings(30)
    for item in changed[:7]:
        item["description"] = "A better job."
    changed.extend(postings(3, prefix="new"))
    feed_server.put(f"{unique}-a.xml", rss(changed), conditional=False)
    [update] = await run_import(pipeline_env, url)
    assert update["status"] == "completed"
    assert counts(update) == (33, 3, 7, 23, 0)
    versions = sorted(d["version"] for d in db.jobs.find({"sourceUrl": url}))
    assert versions == [1] * 26 + [2] * 7
    assert db.jobs.count_documents({"description": "A better job."}) == 7


async def test_not_modified_feed_is_a_completed_run_with_zero_counts(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-etag.xml", rss(postings(5)))
    [first] = await run_import(pipeline_env, url)
    assert counts(first) == (5, 5, 0, 0, 0)
    [second] = await run_import(pipeline_env, url)
    assert second["status"] == "completed"
    assert second["meta"]["notModified"] is True
    assert counts(second) == (0, 0, 0, 0, 0)


async def test_broken_and_hostile_feeds_fail_while_the_others_complete(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    urls = {
        name: feed_server.put(f"{unique}-{name}", (SAMPLE_FEEDS / name).read_bytes())
        for name in ("wp-job-manager.rss.xml", "careers.atom.xml", "higher-ed.rss.xml",
                     "broken-truncated.xml", "hostile-entity-expansion.xml")
    }
    urls["html"] = feed_server.put(f"{unique}-page.html", b"<html><body>Not a feed</body></html>", "text/html")
    urls["missing"] = feed_server.url(f"{unique}-does-not-exist.xml")
    docs = {doc["sourceUrl"]: doc for doc in await run_import(pipeline_env, *urls.values())}
    by_name = {name: docs[url] for name, url in urls.items()}

    for name in ("wp-job-manager.rss.xml", "careers.atom.xml", "higher-ed.rss.xml"):
        assert by_name[name]["status"] == "completed", by_name[name]
        assert by_name[name]["newJobs"] == by_name[name]["totalFetched"] > 0
    for name in ("broken-truncated.xml", "hostile-entity-expansion.xml", "html", "missing"):
        assert by_name[name]["status"] == "failed", by_name[name]
        assert by_name[name]["error"], by_name[name]
        assert counts(by_name[name]) == (0, 0, 0, 0, 0)
    assert "entit" in by_name["hostile-entity-expansion.xml"]["error"]
    assert "parse" in by_name["broken-truncated.xml"]["error"].lower()
    assert "404" in by_name["missing"]["error"]
    total = sum(by_name[n]["newJobs"] for n in ("wp-job-manager.rss.xml", "careers.atom.xml", "higher-ed.rss.xml"))
    assert mongo_db(pipeline_env).jobs.count_documents({}) == total


async def test_items_without_identity_fail_alone_and_the_run_is_partial(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    body = rss(postings(4)).replace(b"</channel>", b"<item><title>No id, no link</title></item></channel>")
    url = feed_server.put(f"{unique}-partial.xml", body)
    [doc] = await run_import(pipeline_env, url)
    assert doc["status"] == "partial"
    assert counts(doc) == (5, 4, 0, 0, 1)
    assert doc["failures"][0]["reason"] == "missing guid and link"


async def test_a_posting_too_large_for_the_broker_fails_alone(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    # 400,000 "é": 800 kB as UTF-8, 2.4 MB escaped; either way over the 1 MiB Kafka message limit.
    items = [*postings(3), {"guid": "huge", "title": "Huge", "description": "é" * 400_000}]
    url = feed_server.put(f"{unique}-huge.xml", rss(items))
    [doc] = await run_import(pipeline_env, url)
    assert doc["status"] == "partial" and counts(doc) == (4, 3, 0, 0, 1), doc
    assert doc["failures"][0]["key"] == "huge" and "too large for the broker" in doc["failures"][0]["reason"]
    assert mongo_db(pipeline_env).jobs.count_documents({}) == 3


async def test_same_item_twice_in_one_feed_counts_twice(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    items = postings(3)
    url = feed_server.put(f"{unique}-dup.xml", rss([*items, items[0]]), conditional=False)
    [doc] = await run_import(pipeline_env, url)
    assert counts(doc) == (4, 3, 0, 1, 0)
    assert mongo_db(pipeline_env).jobs.count_documents({}) == 3


async def test_changes_topic_carries_created_and_updated_events(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-changes.xml", rss(postings(4)), conditional=False)
    await run_import(pipeline_env, url)
    items = postings(4)
    items[0]["title"] = "Staff Engineer 0"
    feed_server.put(f"{unique}-changes.xml", rss(items), conditional=False)
    await run_import(pipeline_env, url)

    consumer = AIOKafkaConsumer(
        f"{pipeline_env['TOPIC_PREFIX']}jobs.changes", bootstrap_servers=pipeline_env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=f"downstream-{unique}", auto_offset_reset="earliest",
    )
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(events) < 5 and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                events.extend(json.loads(r.value) for r in records if r.value)
    finally:
        await consumer.stop()
    assert sorted(e["type"] for e in events) == ["created"] * 4 + ["updated"]
    [updated] = [e for e in events if e["type"] == "updated"]
    assert updated["version"] == 2 and updated["job"]["title"] == "Staff Engineer 0"
    assert {"type", "runId", "version", "fingerprint", "occurredAt", "job"} <= set(updated)


async def test_several_feeds_at_once_are_counted_separately(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    urls = [feed_server.put(f"{unique}-many-{i}.xml", rss(postings(10 + i, prefix=f"f{i}"))) for i in range(8)]
    docs = {doc["sourceUrl"]: doc for doc in await run_import(pipeline_env, *urls)}
    for i, url in enumerate(urls):
        assert counts(docs[url]) == (10 + i, 10 + i, 0, 0, 0)
    assert mongo_db(pipeline_env).jobs.count_documents({}) == sum(10 + i for i in range(8))


def scheduled_feeds(feed_server: FeedServer, tmp_path: Path, name: str, count: int, items: int) -> tuple[list[str], dict[str, str]]:
    """``count`` feeds of ``items`` postings listed in a FEEDS_FILE: their URLs, and the worker settings that
    schedule them from the first tick."""
    urls = [feed_server.put(f"{name}-{i}.xml", rss(postings(items, prefix=f"{name}-{i}"))) for i in range(count)]
    feeds_file = tmp_path / f"{name}-feeds.yaml"
    feeds_file.write_text("feeds:\n" + "".join(f"  - url: {url}\n    name: feed {i}\n" for i, url in enumerate(urls)))
    return urls, {"FEEDS_FILE": str(feeds_file), "IMPORT_ON_START": "true"}


async def test_a_worker_that_becomes_leader_later_does_not_schedule_the_same_feeds_again(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, tmp_path: Path
) -> None:
    # The leader moves when a worker joins or restarts; the new leader's own timer knows nothing of
    # the runs the last one scheduled, so what is due must come from import_logs.
    urls, overrides = scheduled_feeds(feed_server, tmp_path, f"{unique}-lead", count=2, items=5)
    first = start_worker(**overrides)
    db = mongo_db(pipeline_env)
    await wait_for(lambda: len(docs := list(db.import_logs.find({}))) >= 2 and all(d["status"] in FINISHED for d in docs),
                   120, "two finished scheduled runs")
    first.stop()
    start_worker(**{**overrides, "WORKER_METRICS_PORT": str(free_port()), "DATA_DIR": str(tmp_path / "next-leader")})
    await asyncio.sleep(15)  # its first tick (5 s after start) has passed
    assert sorted(doc["sourceUrl"] for doc in db.import_logs.find({})) == sorted(urls), "scheduled once within the interval"


async def test_two_workers_schedule_each_feed_once_and_share_the_work(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, tmp_path: Path
) -> None:
    urls, overrides = scheduled_feeds(feed_server, tmp_path, f"{unique}-sched", count=3, items=20)
    start_worker(**overrides)
    start_worker(**{**overrides, "WORKER_METRICS_PORT": str(free_port()), "DATA_DIR": str(tmp_path / "second-worker")})
    db = mongo_db(pipeline_env)

    await wait_for(lambda: len(docs := list(db.import_logs.find({}))) >= 3 and all(d["status"] in FINISHED for d in docs),
                   120, "three finished scheduled runs")
    await asyncio.sleep(8)  # a second scheduler (the bug this guards against) would have fired by now
    docs = list(db.import_logs.find({}, {"_id": 0}))
    assert sorted(doc["sourceUrl"] for doc in docs) == sorted(urls), "each feed is scheduled exactly once"
    for doc in docs:
        assert doc["trigger"] == "schedule"
        assert counts(doc) == (20, 20, 0, 0, 0)
    assert db.jobs.count_documents({}) == 60
