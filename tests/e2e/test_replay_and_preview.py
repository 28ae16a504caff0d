"""Replay of stored payloads and feed previews against the real stack: worker subprocess, API, Kafka, FerretDB."""

from __future__ import annotations

import asyncio
import os
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from bson import Binary

from models.runs import FINISHED
from tests.api.support import ApiHarness, start_api
from tests.e2e.test_pipeline import assert_invariant, counts, postings, run_import
from tests.support import ROOT, FeedServer, Process, mongo_db, rss, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def api(pipeline_env: dict[str, str]) -> AsyncIterator[ApiHarness]:
    harness = await start_api(pipeline_env)
    yield harness
    await harness.close()


async def replay(api: ApiHarness, body: dict[str, str], status: int = 202) -> Any:
    return await api.json("POST", "/api/import/replay", status, json=body)


async def finished_run(env: dict[str, str], run_id: str) -> dict[str, Any]:
    db = mongo_db(env)
    doc = await wait_for(lambda: (d := db.import_logs.find_one({"runId": run_id}, {"_id": 0})) and d["status"] in FINISHED and d,
                         120, f"run {run_id} to finish")
    assert_invariant(doc)
    return dict(doc)


async def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``jobstream ARGS`` in a subprocess (asynchronously: the feed server runs on this test's loop)."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "streams.cli", *args, cwd=ROOT,
                                                   env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return int(process.returncode or 0), output.decode()


async def register(api: ApiHarness, url: str) -> None:
    await api.json("POST", "/api/feeds", 201, json={"url": url, "name": "replayed"})


async def test_a_replay_of_unchanged_data_is_all_unchanged_and_fetches_nothing(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, api: ApiHarness
) -> None:
    start_worker()
    name = f"{unique}-replay.xml"
    url = feed_server.put(name, rss(postings(30)))  # conditional: the feed's ETag is kept after the run
    await register(api, url)
    [first] = await run_import(pipeline_env, url)
    assert counts(first) == (30, 30, 0, 0, 0)
    db = mongo_db(pipeline_env)
    validators = db.fetch_state.find_one({"sourceUrl": url}, {"_id": 0})
    assert validators and validators.get("etag")
    hits = feed_server.hits.count(name)

    answer = await replay(api, {"runId": first["runId"]})
    [run] = answer["runs"]
    assert run["sourceUrl"] == url and run["replayOf"] == first["runId"] and run["runId"] != first["runId"]
    doc = await finished_run(pipeline_env, run["runId"])
    assert doc["status"] == "completed" and counts(doc) == (30, 0, 0, 30, 0), doc
    assert doc["trigger"] == "replay" and doc["meta"]["replayOf"] == first["runId"]

    by_feed = await replay(api, {"feed": url})
    assert by_feed["runs"][0]["replayOf"] == first["runId"], "the feed's latest stored payload"
    again = await finished_run(pipeline_env, by_feed["runs"][0]["runId"])
    assert counts(again) == (30, 0, 0, 30, 0)

    assert feed_server.hits.count(name) == hits, "a replay fetches nothing"
    assert db.fetch_state.find_one({"sourceUrl": url}, {"_id": 0}) == validators, "nor touches the validators"
    assert db.raw_feeds.count_documents({"sourceUrl": url}) == 1, "nor stores the payload again"

    code, output = await cli(pipeline_env, "replay", first["runId"], "--timeout", "120")
    assert code == 0 and "unchanged=30" in output and "1 of 1 runs completed" in output, output
    code, output = await cli(pipeline_env, "replay", "no-such-run")
    assert code == 2 and "no import run" in output, output


async def test_a_replay_of_an_older_payload_never_rolls_a_posting_back(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, api: ApiHarness
) -> None:
    start_worker()
    name = f"{unique}-older.xml"
    url = feed_server.put(name, rss(postings(30)), conditional=False)
    await register(api, url)
    [older] = await run_import(pipeline_env, url)
    changed = postings(30)
    for item in changed[:7]:
        item["description"] = "A better job."
    # one posting only the older payload has, deleted from the store since: the replay brings it back
    feed_server.put(name, rss([*changed, *postings(2, prefix="newer")]), conditional=False)
    [newer] = await run_import(pipeline_env, url)
    assert counts(newer) == (32, 2, 7, 23, 0)
    db = mongo_db(pipeline_env)
    before = {d["_id"]: (d["version"], d["description"], d["fingerprint"]) for d in db.jobs.find({"sourceUrl": url})}

    [run] = (await replay(api, {"runId": older["runId"]}))["runs"]
    doc = await finished_run(pipeline_env, run["runId"])
    # The 7 postings the newer payload changed stay as it made them; nothing is written.
    assert counts(doc) == (30, 0, 0, 30, 0), doc
    after = {d["_id"]: (d["version"], d["description"], d["fingerprint"]) for d in db.jobs.find({"sourceUrl": url})}
    assert after == before
    assert db.jobs.count_documents({"sourceUrl": url, "description": "A better job.", "version": 2}) == 7

    [latest] = (await replay(api, {"runId": newer["runId"]}))["runs"]
    assert counts(await finished_run(pipeline_env, latest["runId"])) == (32, 0, 0, 32, 0)


async def test_a_replay_without_its_payload_or_of_a_busy_feed_is_refused(
    pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, api: ApiHarness
) -> None:
    # No worker: a requested run stays pending, and the rows below are the whole history.
    url = feed_server.put(f"{unique}-gone.xml", rss(postings(3)))
    await register(api, url)
    db = mongo_db(pipeline_env)
    now = datetime.now(UTC)
    row = {"runId": f"{unique}-r1", "sourceUrl": url, "sourceName": "x", "trigger": "manual", "status": "completed",
           "requestedAt": now, "startedAt": now, "meta": {"httpStatus": 200, "bytes": 400}}
    db.import_logs.insert_one(dict(row))
    db.raw_feeds.insert_one({"_id": row["runId"], "runId": row["runId"], "sourceUrl": url, "fetchedAt": now,
                             "httpStatus": 200, "bytes": 400, "encoding": "zlib", "payload": Binary(zlib.compress(rss(postings(3))))})

    db.import_logs.insert_one({**row, "runId": f"{unique}-busy", "status": "running"})
    refused = await replay(api, {"runId": row["runId"]}, 409)
    assert "pending or running" in refused["error"]
    db.import_logs.update_one({"runId": f"{unique}-busy"}, {"$set": {"status": "completed"}})

    [run] = (await replay(api, {"feed": url}))["runs"]
    assert run["replayOf"] == row["runId"]
    again = await replay(api, {"runId": row["runId"]}, 409)  # requested a moment ago: claimed, like a manual run
    assert "pending or running" in again["error"]
    manual = await api.json("POST", "/api/import/run", 202, json={"feeds": [url]})
    assert manual["runs"] == [] and manual["skipped"][0]["sourceUrl"] == url

    other = feed_server.put(f"{unique}-gone2.xml", rss(postings(3)))
    await register(api, other)
    db.import_logs.insert_one({**row, "runId": f"{unique}-r2", "sourceUrl": other})
    db.raw_feeds.insert_one({"_id": f"{unique}-r2x", "runId": f"{unique}-r2x", "sourceUrl": other, "fetchedAt": now,
                             "httpStatus": 200, "bytes": 1, "encoding": "zlib", "payload": Binary(zlib.compress(b"<rss/>"))})
    db.raw_feeds.delete_many({"sourceUrl": other})  # expired: the cleanup removed it
    gone = await replay(api, {"runId": f"{unique}-r2"}, 409)
    assert "is no longer stored" in gone["error"] and f"{unique}-r2" in gone["error"]
    assert "no stored payload" in (await replay(api, {"feed": other}, 409))["error"]
    await replay(api, {"runId": "no-such-run"}, 404)
    for body in ({}, {"runId": "a", "feed": url}, {"runId": 7}, {"feed": "ftp://x"}, {"run": "a"}):
        await api.json("POST", "/api/import/replay", 400, json=body)


async def store_and_topics(env: dict[str, str]) -> tuple[dict[str, int], dict[TopicPartition, int]]:
    """Documents per collection and the end offset of every partition of the pipeline's topics."""
    db = mongo_db(env)
    documents = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith((env["TOPIC_PREFIX"], env["APP_ID"] + "-"))]
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [TopicPartition(topic["topic"], part["partition"]) for topic in described for part in topic["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await consumer.start()
    try:
        offsets = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return documents, offsets


async def test_a_preview_shows_the_first_postings_and_writes_nothing(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, api: ApiHarness
) -> None:
    start_worker()  # every topic exists, and a worker would act on anything a preview sent
    body = rss(postings(25)).replace(b"</channel>", b"<item><title>No id, no link</title></item></channel>")
    url = feed_server.put(f"{unique}-preview.xml", body)
    await run_import(pipeline_env, feed_server.put(f"{unique}-other.xml", rss(postings(2, prefix="o"))))
    before = await store_and_topics(pipeline_env)
    assert len(before[1]) > 20 and sum(before[1].values()) > 0, "the pipeline's topics exist and hold messages"

    preview = await api.json("POST", "/api/feeds/preview", 200, json={"url": url})
    assert preview["format"] == "rss" and preview["totalFetched"] == 26
    assert [item["title"] for item in preview["items"]] == [f"Engineer {i}" for i in range(20)]
    assert preview["items"][0]["sourceUrl"] == url and preview["items"][0]["dedupeKey"]
    assert [f["reason"] for f in preview["failures"]] == ["missing guid and link"]
    assert (await api.json("POST", "/api/feeds/preview", 200, json={"url": url, "format": "auto"}))["totalFetched"] == 26

    page = feed_server.put(f"{unique}-page.html", b"<html><body>Not a feed</body></html>", "text/html")
    assert "not readable as a feed" in (await api.json("POST", "/api/feeds/preview", 422, json={"url": page}))["error"]
    missing = await api.json("POST", "/api/feeds/preview", 422, json={"url": feed_server.url(f"{unique}-missing.xml")})
    assert "404" in missing["error"]
    refused = await api.json("POST", "/api/feeds/preview", 422, json={"url": "http://127.0.0.1:1/feed.xml"})
    assert "refused" in refused["error"]
    for bad in ({}, {"url": "ftp://x"}, {"url": url, "format": "csv"}, {"url": url, "mapping": []}, {"url": url, "x": 1}):
        await api.json("POST", "/api/feeds/preview", 400, json=bad)

    code, output = await cli(pipeline_env, "preview", url)
    assert code == 0 and "format=rss items=26 failed=1" in output and "Engineer 19" in output, output
    assert "missing guid and link" in output
    code, output = await cli(pipeline_env, "preview", page)
    assert code == 1 and "not readable as a feed" in output, output
    code, output = await cli(pipeline_env, "preview", url, "--format", "csv")
    assert code == 2 and "must be one of" in output and "'csv'" in output, output

    assert await store_and_topics(pipeline_env) == before, "a preview writes nothing: no document, no message"


async def test_a_replay_after_a_mapping_change_updates_what_it_changes_and_a_second_replay_nothing(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str, api: ApiHarness
) -> None:
    """Issue 24's replay: fix a mapping, replay the stored payload with it (no fetch), exact counts both times."""
    from tests.e2e.test_job_xml_feeds import CUSTOM, CUSTOM_MAPPING  # noqa: PLC0415 - the custom feed of the format tests

    start_worker()
    name = f"{unique}-mapped.xml"
    url = feed_server.put(name, CUSTOM.encode(), conditional=False)
    feed = await api.json("POST", "/api/feeds", 201, json={"url": url, "name": "ATS", "format": "xml",
                                                           "mapping": CUSTOM_MAPPING})
    [requested] = (await api.json("POST", "/api/import/run", 202, json={"feeds": [url]}))["runs"]  # with the feed's mapping
    first = await finished_run(pipeline_env, requested["runId"])
    assert counts(first) == (2, 2, 0, 0, 0), first
    hits = feed_server.hits.count(name)

    fixed = dict(CUSTOM_MAPPING, fields={**CUSTOM_MAPPING["fields"], "location": "hr:place/city"})
    await api.json("PATCH", f"/api/feeds/{feed['id']}", 200, json={"format": "xml", "mapping": fixed})
    [run] = (await replay(api, {"runId": first["runId"]}))["runs"]
    remapped = await finished_run(pipeline_env, run["runId"])
    assert counts(remapped) == (2, 0, 2, 0, 0), remapped  # both postings' location changed: updated, exact
    jobs = {d["externalId"]: d for d in mongo_db(pipeline_env).jobs.find({"sourceUrl": url})}
    assert (jobs["ATS-1"]["location"], jobs["ATS-1"]["version"]) == ("Berlin", 2)

    [again] = (await replay(api, {"feed": url}))["runs"]
    assert again["replayOf"] == first["runId"], "the feed's latest stored payload is still the first run's"
    assert counts(await finished_run(pipeline_env, again["runId"])) == (2, 0, 0, 2, 0)
    assert feed_server.hits.count(name) == hits, "replays fetch nothing"
