"""Every endpoint of SPEC §5 over HTTP, against the real Kafka broker and the MongoDB-compatible store."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from api.openapi import openapi_document
from models.runs import last_run_update
from tests.api.conftest import MakeApi
from tests.api.support import (
    BASE_TIME,
    ApiHarness,
    commands_watch,
    eventually,
    fast_options,
    insert_jobs,
    job_doc,
    next_commands,
    run_doc,
    sample,
    stored,
)
from tests.support import free_port, mongo_db

pytestmark = pytest.mark.integration

ISO_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


def new_url(name: str = "feed") -> str:
    return f"https://{uuid.uuid4().hex[:8]}.example.com/{name}.xml"


# --- health ----------------------------------------------------------------------------------------


async def own_topics(make_api: MakeApi) -> ApiHarness:
    """An API on topics and a consumer group of its own: the shared topics hold run requests of other tests.

    Returned once the broker can name the group's coordinator: a fresh broker creates ``__consumer_offsets``
    at the first group question, and until then the workers part is ``unknown: ...``.
    """
    unique = uuid.uuid4().hex[:10]
    api = await make_api(TOPIC_PREFIX=f"h{unique}.", APP_ID=f"h{unique}")

    async def known() -> bool:
        response = await api.client.get("/health")
        return not (await response.json())["workers"].startswith("unknown")

    await eventually(known, 60, "the consumer group's coordinator")
    return api


async def test_health_is_ok_when_kafka_and_mongo_answer(make_api: MakeApi) -> None:
    # No worker runs in this test, and no run was requested: the pipeline is idle, not broken.
    api = await own_topics(make_api)
    idle = f"idle: no worker in consumer group {api.settings.app_id!r}"
    assert await api.json("GET", "/health", 200) == {"status": "ok", "kafka": "ok", "mongo": "ok", "workers": idle}


async def test_health_is_503_naming_the_workers_when_runs_wait_and_none_consumes(make_api: MakeApi) -> None:
    """A fresh clone whose workers died at start answered 202 to every run request and 200 on /health."""
    api = await own_topics(make_api)
    url = new_url()
    await api.json("POST", "/api/feeds", 201, json={"url": url})
    await api.json("POST", "/api/import/run", 202, json={"feeds": [url]})
    response = await api.client.get("/health")
    body = await response.json()
    assert response.status == 503, body
    assert body["status"] == "error" and body["kafka"] == "ok" and body["mongo"] == "ok"
    assert body["workers"] == (f"error: 1 run request(s) waiting on {api.settings.topic('commands')} and no worker in "
                               f"consumer group {api.settings.app_id!r} (start one: `make run` or `jobstream worker`)")


async def test_health_names_mongo_when_it_is_unreachable(make_api: MakeApi) -> None:
    port = free_port()
    down = await make_api(fast_options(health_timeout_seconds=1.0), MONGO_URL=f"mongodb://127.0.0.1:{port}")
    response = await down.client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "error" and body["kafka"] == "ok"
    assert body["mongo"].startswith("error: ")
    assert str(port) not in body["mongo"] and "127.0.0.1" not in body["mongo"]  # no host, no exception text


async def test_health_names_kafka_when_it_is_unreachable(make_api: MakeApi) -> None:
    down = await make_api(fast_options(health_timeout_seconds=1.0, follower_ready_seconds=0.5, kafka_wait_seconds=0.5),
                          KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    response = await down.client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "error" and body["mongo"] == "ok"
    assert body["kafka"].startswith("error: ")
    assert body["kafka"] == "error: unreachable"  # no broker address, no exception text: those go to the log
    # reads still work without Kafka; a run request says why it cannot be done
    await down.json("GET", "/api/import-logs", 200)
    url = new_url()
    await down.json("POST", "/api/feeds", 201, json={"url": url})
    error = await down.json("POST", "/api/import/run", 503, json={"feeds": [url]})
    assert error == {"error": "Kafka unavailable"}
    # the feed was not requested, so it is not held as "already requested" either
    error = await down.json("POST", "/api/import/run", 503, json={"feeds": [url]})
    assert error == {"error": "Kafka unavailable"}


# --- import logs -----------------------------------------------------------------------------------


@pytest.fixture
def seeded_runs(api: ApiHarness) -> tuple[str, list[dict[str, Any]]]:
    """Six runs of one new source: two not started yet, four started at known times."""
    source = new_url("runs")
    t = BASE_TIME
    docs = [
        run_doc("r-old", source, "completed", t, counts=(5, 0, 0, 0)),
        run_doc("r-partial", source, "partial", t + timedelta(hours=1), counts=(3, 1, 0, 1),
                failures=[{"key": "item[4]", "reason": "missing guid and link", "stage": "normalise"}]),
        run_doc("r-failed", source, "failed", t + timedelta(hours=2), error="HTTP 500"),
        run_doc("r-running", source, "running", t + timedelta(hours=3), counts=(1, 0, 0, 0)),
        run_doc("r-pending-1", source, "pending", None, requested=t + timedelta(hours=4)),
        run_doc("r-pending-2", source, "pending", None, requested=t + timedelta(hours=5)),
    ]
    suffix = uuid.uuid4().hex[:12]
    for doc in docs:
        doc["runId"] = f"{doc['runId']}-{suffix}"
    mongo_db(api.env).import_logs.insert_many([stored(doc) for doc in docs])
    return source, docs


def ids(body: dict[str, Any]) -> list[str]:
    return [item["runId"].rsplit("-", 1)[0] for item in body["items"]]


async def test_import_logs_are_newest_requested_first(api: ApiHarness, seeded_runs: Any) -> None:
    source, _ = seeded_runs
    body = await api.json("GET", "/api/import-logs", 200, params={"source": source, "total": "1"})
    assert ids(body) == ["r-pending-2", "r-pending-1", "r-running", "r-failed", "r-partial", "r-old"]
    assert (body["page"], body["limit"], body["total"], body["totalExact"], body["next"]) == (1, 50, 6, True, None)
    uncounted = await api.json("GET", "/api/import-logs", 200, params={"source": source})
    assert ids(uncounted) == ids(body) and (uncounted["total"], uncounted["totalExact"]) == (None, False)
    first = body["items"][2]
    assert "_id" not in first and "failures" not in first
    assert first["fileName"] == source and first["status"] == "running"
    assert re.match(ISO_Z, first["startedAt"]) and re.match(ISO_Z, first["requestedAt"])
    assert body["items"][0]["startedAt"] is None


async def test_import_logs_paginate_across_unstarted_and_started(api: ApiHarness, seeded_runs: Any) -> None:
    source, _ = seeded_runs
    pages = [await api.json("GET", "/api/import-logs", 200,
                            params={"source": source, "limit": "4", "page": str(p), "total": "1"}) for p in (1, 2, 3)]
    assert [ids(p) for p in pages] == [["r-pending-2", "r-pending-1", "r-running", "r-failed"], ["r-partial", "r-old"], []]
    assert {p["total"] for p in pages} == {6}
    assert pages[0]["next"] and pages[1]["next"] is None and pages[2]["next"] is None
    by_cursor = await api.json("GET", "/api/import-logs", 200, params={"source": source, "limit": "4",
                                                                         "after": pages[0]["next"]})
    assert ids(by_cursor) == ids(pages[1]) and by_cursor["page"] == 2
    middle = await api.json("GET", "/api/import-logs", 200, params={"source": source, "limit": "3", "page": "2"})
    assert ids(middle) == ["r-failed", "r-partial", "r-old"]


@pytest.mark.parametrize(("params", "expected"), [
    ({"status": "failed"}, ["r-failed"]),
    ({"status": "pending,running"}, ["r-pending-2", "r-pending-1", "r-running"]),
    # since is on requestedAt (r-failed was requested one second before it started, at 12:00)
    ({"since": (BASE_TIME + timedelta(hours=2, seconds=-1)).isoformat()}, ["r-pending-2", "r-pending-1", "r-running", "r-failed"]),
    ({"since": (BASE_TIME + timedelta(hours=2)).isoformat()}, ["r-pending-2", "r-pending-1", "r-running"]),
    ({"since": "2025-01-06T14:30:00Z"}, ["r-pending-2"]),
    ({"status": "completed,partial", "since": "2025-01-06"}, ["r-partial", "r-old"]),
])
async def test_import_logs_filters(api: ApiHarness, seeded_runs: Any, params: dict[str, str], expected: list[str]) -> None:
    source, _ = seeded_runs
    body = await api.json("GET", "/api/import-logs", 200, params={"source": source, "total": "1", **params})
    assert ids(body) == expected and body["total"] == len(expected)
    one_by_one: list[str] = []
    after = None
    while True:  # the cursor walk of the same filter lists the same runs
        page = await api.json("GET", "/api/import-logs", 200,
                              params={"source": source, "limit": "1", **params, **({"after": after} if after else {})})
        one_by_one += ids(page)
        if not (after := page["next"]):
            break
    assert one_by_one == expected


@pytest.mark.parametrize("params", [
    {"page": "0"}, {"page": "two"}, {"limit": "0"}, {"limit": "201"}, {"limit": "1e3"}, {"status": "done"},
    {"since": "last week"}, {"since": "2025-02-30"}, {"page": "999999999999999999"}, {"page": "1" * 5000},
    {"page": "1001"}, {"page": "300", "limit": "50"}, {"after": "garbage"}, {"total": "maybe"},
])
async def test_import_logs_reject_bad_parameters_with_400(api: ApiHarness, params: dict[str, str]) -> None:
    error = await api.json("GET", "/api/import-logs", 400, params=params)
    assert next(iter(params)) in error["error"]


async def test_import_log_detail_has_failures(api: ApiHarness, seeded_runs: Any) -> None:
    source, docs = seeded_runs
    partial = docs[1]
    body = await api.json("GET", f"/api/import-logs/{partial['runId']}", 200)
    assert body["failures"] == [{"key": "item[4]", "reason": "missing guid and link", "stage": "normalise"}]
    assert body["totalFetched"] == 5 and body["totalImported"] == 4 and body["sourceUrl"] == source
    assert body["finishedAt"].endswith("Z") and "_id" not in body


async def test_unknown_import_log_is_404(api: ApiHarness) -> None:
    error = await api.json("GET", "/api/import-logs/no-such-run", 404)
    assert "no-such-run" in error["error"]


# --- jobs ------------------------------------------------------------------------------------------


@pytest.fixture
def seeded_jobs(api: ApiHarness) -> tuple[str, str, str]:
    source, other, prefix = new_url("jobs"), new_url("other"), uuid.uuid4().hex
    t = BASE_TIME
    jobs = [
        job_doc(f"{prefix}-1", source, "Senior Python Engineer", "Acme", t),
        job_doc(f"{prefix}-2", source, "C++ (Embedded) Developer", "Initech", t + timedelta(days=1)),
        job_doc(f"{prefix}-3", source, "Data Analyst", "python works", t + timedelta(days=2)),
        job_doc(f"{prefix}-o1", other, "Python Developer", "Acme", t),
    ]
    insert_jobs(mongo_db(api.env), jobs)
    return source, other, prefix


def keys(body: dict[str, Any]) -> list[str]:
    return [item["dedupeKey"].rsplit("-", 1)[1] for item in body["items"]]


async def test_jobs_search_title_or_company_case_insensitively(api: ApiHarness, seeded_jobs: Any) -> None:
    source, other, _ = seeded_jobs
    body = await api.json("GET", "/api/jobs", 200, params={"q": "PYTHON", "source": source, "total": "1"})
    assert keys(body) == ["3", "1"]  # newest published first
    assert body["total"] == 2 and "description" not in body["items"][0] and "_id" not in body["items"][0]
    assert body["items"][0]["publishedAt"] == "2025-01-08T10:00:00Z"
    special = await api.json("GET", "/api/jobs", 200, params={"q": "c++ (embedded", "source": source})
    assert keys(special) == ["2"]
    assert (await api.json("GET", "/api/jobs", 200, params={"q": ".*", "source": source, "total": "1"}))["total"] == 0


async def test_jobs_filter_by_company_and_source_and_paginate(api: ApiHarness, seeded_jobs: Any) -> None:
    source, other, _ = seeded_jobs
    acme = await api.json("GET", "/api/jobs", 200, params={"company": "acme", "q": "python"})
    assert {item["sourceUrl"] for item in acme["items"]} >= {source, other}
    assert keys(await api.json("GET", "/api/jobs", 200, params={"company": "ACME", "source": other})) == ["o1"]
    pages = [await api.json("GET", "/api/jobs", 200, params={"source": source, "limit": "2", "page": str(p), "total": "1"})
             for p in (1, 2)]
    assert [keys(p) for p in pages] == [["3", "2"], ["1"]] and pages[1]["total"] == 3
    by_cursor = await api.json("GET", "/api/jobs", 200, params={"source": source, "limit": "2", "after": pages[0]["next"]})
    assert keys(by_cursor) == ["1"] and by_cursor["next"] is None and by_cursor["page"] == 2
    assert (by_cursor["total"], by_cursor["totalExact"]) == (None, False)  # filtered and not asked: not counted


async def test_company_matches_the_whole_name_by_unicode_casefolding(api: ApiHarness) -> None:
    source, prefix = new_url("casefold"), uuid.uuid4().hex
    insert_jobs(mongo_db(api.env), [
        job_doc(f"{prefix}-1", source, "Fahrer", "Müller Straße GmbH", BASE_TIME),
        job_doc(f"{prefix}-2", source, "Koch", "  MÜLLER STRASSE GMBH ", BASE_TIME + timedelta(hours=1)),
        job_doc(f"{prefix}-3", source, "Bäcker", "Müller Straße GmbH & Co", BASE_TIME + timedelta(hours=2)),
    ])
    found = await api.json("GET", "/api/jobs", 200, params={"company": "müller strasse gmbh", "source": source})
    assert keys(found) == ["2", "1"]
    searched = await api.json("GET", "/api/jobs", 200, params={"q": "STRASSE", "source": source})
    assert keys(searched) == ["3", "2", "1"]


@pytest.mark.parametrize(("params", "fragment"), [
    ({"page": "-3"}, "page"), ({"limit": "500"}, "limit"), ({"limit": "x"}, "limit"),
    ({"page": "999999999999999999"}, "page"), ({"page": "1001"}, "page"), ({"page": "202", "limit": "50"}, "after"),
    ({"after": "not-a-cursor"}, "after"), ({"after": "W10"}, "after"), ({"after": "x" * 1001}, "after"),
    ({"page": "2", "after": "W10"}, "not both"), ({"total": "2"}, "total"),
])
async def test_jobs_reject_bad_parameters_with_400(api: ApiHarness, params: dict[str, str], fragment: str) -> None:
    error = await api.json("GET", "/api/jobs", 400, params=params)
    assert fragment in error["error"]


async def test_a_cursor_of_one_list_is_refused_by_the_other(api: ApiHarness, seeded_runs: Any) -> None:
    source, _ = seeded_runs
    runs = await api.json("GET", "/api/import-logs", 200, params={"source": source, "limit": "1"})
    error = await api.json("GET", "/api/jobs", 400, params={"after": runs["next"]})
    assert "after" in error["error"]


async def test_job_detail_and_404(api: ApiHarness, seeded_jobs: Any) -> None:
    _, _, prefix = seeded_jobs
    job = await api.json("GET", f"/api/jobs/{prefix}-2", 200)
    assert job["title"] == "C++ (Embedded) Developer" and job["description"] == "About C++ (Embedded) Developer"
    assert job["createdAt"] == "2025-01-07T10:00:00Z"
    await api.json("GET", "/api/jobs/0000000000000000000000000000000000000000", 404)


# --- feeds -----------------------------------------------------------------------------------------


async def test_feed_lifecycle_add_list_disable_delete(api: ApiHarness) -> None:
    url = new_url()
    created = await api.json("POST", "/api/feeds", 201, json={"url": url, "name": "My feed"})
    assert created["url"] == url and created["name"] == "My feed" and created["enabled"] is True
    assert len(created["id"]) == 24 and created["createdAt"].endswith("Z")

    listed = await api.json("GET", "/api/feeds", 200)
    mine = [feed for feed in listed["items"] if feed["url"] == url]
    assert mine == [{**created, "lastRun": None}]

    await api.json("POST", "/api/feeds", 409, json={"url": url})
    disabled = await api.json("PATCH", f"/api/feeds/{created['id']}", 200, json={"enabled": False})
    assert disabled["enabled"] is False and disabled["name"] == "My feed"
    assert mongo_db(api.env).feeds.find_one({"url": url})["enabled"] is False  # type: ignore[index]

    await api.json("DELETE", f"/api/feeds/{created['id']}", 204)
    await api.json("DELETE", f"/api/feeds/{created['id']}", 404)
    await api.json("PATCH", f"/api/feeds/{created['id']}", 404, json={"enabled": True})
    assert mongo_db(api.env).feeds.count_documents({"url": url}) == 0


async def test_feed_list_shows_the_latest_run(api: ApiHarness) -> None:
    """As the stats agent keeps it on the feed (``models.runs.last_run_update``): the newest run wins, in any order."""
    url = new_url()
    await api.json("POST", "/api/feeds", 201, json={"url": url})
    older = run_doc(f"a-{uuid.uuid4().hex}", url, "completed", BASE_TIME)
    newer = run_doc(f"b-{uuid.uuid4().hex}", url, "failed", BASE_TIME + timedelta(hours=1), error="boom")
    feeds = mongo_db(api.env).feeds
    for doc in (newer, older, {**older, "status": "running"}):  # a late projection of an older run changes nothing
        update = last_run_update(doc)
        assert update is not None
        feeds.update_one(*update)
    listed = await api.json("GET", "/api/feeds", 200)
    [feed] = [feed for feed in listed["items"] if feed["url"] == url]
    assert feed["lastRun"]["runId"] == newer["runId"] and feed["lastRun"]["status"] == "failed"
    assert feed["lastRun"]["requestedAt"] == newer["requestedAt"]


async def test_a_feed_registered_before_feeds_kept_their_last_run_has_it_read_from_import_logs(api: ApiHarness) -> None:
    url = new_url()
    mongo_db(api.env).feeds.insert_one({"url": url, "name": "old", "enabled": True, "createdAt": BASE_TIME})  # no lastRun
    older = run_doc(f"a-{uuid.uuid4().hex}", url, "completed", BASE_TIME)
    newer = run_doc(f"b-{uuid.uuid4().hex}", url, "failed", BASE_TIME + timedelta(hours=1), error="boom")
    mongo_db(api.env).import_logs.insert_many([stored(older), stored(newer)])
    listed = await api.json("GET", "/api/feeds", 200)
    [feed] = [feed for feed in listed["items"] if feed["url"] == url]
    assert feed["lastRun"]["runId"] == newer["runId"] and feed["lastRun"]["status"] == "failed"


@pytest.mark.parametrize(("body", "fragment"), [
    ('{"url": "ftp://example.com/x"}', "http(s)"),
    ('{"name": "no url"}', "url"),
    ('{"url": "https://example.com/x", "enabled": "yes"}', "enabled"),
    ('{"url": "https://example.com/x", "owner": "me"}', "owner"),
    ('["https://example.com/x"]', "JSON object"),
    ('{"url": ', "not valid JSON"),
    ("", "JSON object"),
    (b"\xff\xfe{", "not valid JSON"),
])
async def test_add_feed_rejects_bad_bodies_with_400(api: ApiHarness, body: str | bytes, fragment: str) -> None:
    error = await api.json("POST", "/api/feeds", 400, data=body, headers={"Content-Type": "application/json"})
    assert fragment in error["error"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("DELETE", "/api/feeds/not-an-id", None),
    ("PATCH", "/api/feeds/123", {"enabled": False}),
    ("PATCH", "/api/feeds/0123456789abcdef01234567", {"enabled": "no"}),
    ("PATCH", "/api/feeds/0123456789abcdef01234567", {}),
])
async def test_feed_changes_reject_bad_ids_and_bodies_with_400(api: ApiHarness, method: str, path: str, body: Any) -> None:
    await api.json(method, path, 400, json=body)


async def test_unknown_feed_id_is_404(api: ApiHarness) -> None:
    await api.json("DELETE", "/api/feeds/0123456789abcdef01234567", 404)


# --- triggering runs -------------------------------------------------------------------------------


async def commands_after(api: ApiHarness, action: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``action`` and return its result and the commands it put on the commands topic."""
    async with commands_watch(api.settings) as consumer:
        result = await action()
        expected = len(result["runs"]) if isinstance(result, dict) else 0
        commands: list[dict[str, Any]] = []
        for _ in range(20):
            if len(commands) >= expected:
                break
            commands += await next_commands(consumer, 500)
        return result, commands


async def test_run_request_for_given_urls_is_published_as_commands(api: ApiHarness) -> None:
    known, other = new_url("known"), new_url("other")
    await api.json("POST", "/api/feeds", 201, json={"url": known, "name": "Known feed"})
    await api.json("POST", "/api/feeds", 201, json={"url": other})

    result, commands = await commands_after(api, lambda: api.json(
        "POST", "/api/import/run", 202, json={"feeds": [known, other, known]}))
    assert [run["sourceUrl"] for run in result["runs"]] == [known, other] and result["skipped"] == []
    assert all(run["runId"] for run in result["runs"])
    by_url = {command["sourceUrl"]: command for command in commands}
    assert set(by_url) == {known, other}
    assert by_url[known]["sourceName"] == "Known feed" and by_url[known]["trigger"] == "manual"
    assert by_url[other]["sourceName"] == other.split("/")[2]
    assert {c["runId"] for c in commands} == {r["runId"] for r in result["runs"]}


async def test_with_api_token_unregistered_urls_run_too(make_api: MakeApi) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    secured = await make_api(API_TOKEN=token)
    unknown = new_url("unknown")
    result, commands = await commands_after(secured, lambda: secured.json(
        "POST", "/api/import/run", 202, json={"feeds": [unknown]}, headers={"Authorization": f"Bearer {token}"}))
    assert [run["sourceUrl"] for run in result["runs"]] == [unknown]
    assert [(c["sourceUrl"], c["sourceName"]) for c in commands] == [(unknown, unknown.split("/")[2])]


async def test_run_request_without_body_runs_every_enabled_feed(make_api: MakeApi) -> None:
    own = await make_api()  # its own, empty registry
    empty = await own.json("POST", "/api/import/run", 202)
    assert empty == {"runs": [], "skipped": []}
    enabled, disabled = new_url("on"), new_url("off")
    await own.json("POST", "/api/feeds", 201, json={"url": enabled})
    await own.json("POST", "/api/feeds", 201, json={"url": disabled, "enabled": False})
    result, commands = await commands_after(own, lambda: own.json("POST", "/api/import/run", 202, json={}))
    assert [run["sourceUrl"] for run in result["runs"]] == [enabled]
    assert [command["sourceUrl"] for command in commands] == [enabled]


@pytest.mark.parametrize(("body", "fragment"), [
    ('{"feeds": []}', "non-empty"),
    ('{"feeds": ["javascript:alert(1)"]}', "feeds[0]"),
    ('{"feeds": "https://example.com/x"}', "list"),
    ('{"feeds": ["https://example.com/x"], "now": true}', "now"),
    ("{feeds: []}", "not valid JSON"),
    ("42", "JSON object"),
])
async def test_run_request_rejects_bad_bodies_with_400(api: ApiHarness, body: str, fragment: str) -> None:
    error = await api.json("POST", "/api/import/run", 400, data=body, headers={"Content-Type": "application/json"})
    assert fragment in error["error"]


# --- routing errors, auth --------------------------------------------------------------------------


async def test_unknown_routes_are_404_json_and_wrong_methods_405_json(api: ApiHarness) -> None:
    await api.json("GET", "/api/nothing-here", 404)
    await api.json("GET", "/static/missing.js", 404)
    response = await api.client.put("/api/feeds")
    assert response.status == 405 and (await response.json())["error"].startswith("method not allowed")
    assert "POST" in response.headers["Allow"]
    await api.json("POST", "/health", 405)


async def test_a_token_that_is_not_utf8_is_a_401_not_a_500(make_api: MakeApi) -> None:
    secured = await make_api(API_TOKEN=f"tok-{uuid.uuid4().hex}")
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.client.port)
    body = b'{"url": "https://example.com/x.xml"}'
    writer.write(b"POST /api/feeds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"missing or wrong bearer token" in answer


async def test_api_token_guards_mutating_requests_only(make_api: MakeApi) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    secured = await make_api(API_TOKEN=token)
    url = new_url()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": token}, {"Authorization": f"Bearer {token}x"}):
        response = await secured.client.post("/api/feeds", json={"url": url}, headers=headers)
        assert response.status == 401, headers
        assert (await response.json())["error"].startswith("missing or wrong bearer token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await secured.json("POST", "/api/import/run", 401, json={"feeds": [url]})
    await secured.json("PATCH", "/api/feeds/0123456789abcdef01234567", 401, json={"enabled": False})
    await secured.json("DELETE", "/api/feeds/0123456789abcdef01234567", 401)
    assert mongo_db(secured.env).feeds.count_documents({}) == 0

    auth = {"Authorization": f"Bearer {token}"}
    created = await secured.json("POST", "/api/feeds", 201, json={"url": url}, headers=auth)
    await secured.json("PATCH", f"/api/feeds/{created['id']}", 200, json={"enabled": False}, headers=auth)
    await secured.json("GET", "/api/feeds", 200)  # reads need no token
    await secured.json("GET", "/api/import-logs", 200)
    await secured.json("DELETE", f"/api/feeds/{created['id']}", 204, headers=auth)


# --- documents: OpenAPI, dashboard, metrics --------------------------------------------------------


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every handler route; the HEAD twins of GET routes are implied."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        found.add((route.method, resource.canonical))
    return found


async def test_openapi_document_describes_exactly_the_registered_routes(api: ApiHarness) -> None:
    served = await api.json("GET", "/api/openapi.json", 200)
    assert served == json.loads(json.dumps(openapi_document()))
    assert served["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in served["paths"].items() for method in item}
    assert documented == registered_routes(api.app)
    spec_routes = {("GET", "/health"), ("POST", "/api/import/run"), ("GET", "/api/import-logs"),
                   ("GET", "/api/import-logs/{runId}"), ("GET", "/api/import-logs/stream"), ("GET", "/api/jobs"),
                   ("GET", "/api/jobs/{dedupeKey}"), ("GET", "/api/feeds"), ("POST", "/api/feeds"),
                   ("DELETE", "/api/feeds/{id}"), ("GET", "/metrics"), ("GET", "/api/openapi.json"), ("GET", "/")}
    assert spec_routes <= documented
    for path, item in served["paths"].items():
        for operation in item.values():
            refs = json.dumps(operation)
            for name in served["components"]["schemas"]:
                refs = refs.replace(f'"#/components/schemas/{name}"', "")
            assert "#/components/schemas/" not in refs, f"{path}: dangling $ref"


async def test_dashboard_page_and_its_assets_are_served_locally(api: ApiHarness) -> None:
    response = await api.client.get("/")
    html = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert 'id="run-import"' in html and 'src="/static/js/main.js"' in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert not re.search(r'(src|href)="(https?:)?//', html), "no CDN or remote assets"
    for asset, content_type in (("/static/js/main.js", "text/javascript"), ("/static/app.css", "text/css"),
                                ("/static/favicon.svg", "image/svg+xml")):
        asset_response = await api.client.get(asset)
        assert asset_response.status == 200 and asset_response.content_type == content_type, asset
    for outside in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/js/../../queries.py", "/static/js"):
        await api.json("GET", outside, 404)


async def test_api_metrics_count_requests_by_route_template(api: ApiHarness) -> None:
    async def metrics_text() -> str:
        response = await api.client.get("/metrics")
        assert response.status == 200 and response.content_type == "text/plain"
        return await response.text()

    labels = {"method": "GET", "route": "/api/import-logs/{runId}", "status": "404"}
    before = await metrics_text()
    for n in range(3):
        await api.json("GET", f"/api/import-logs/missing-{n}", 404)
    await api.json("GET", "/definitely/not/here", 404)
    after = await metrics_text()
    name = "jobstream_api_requests_total"
    assert sample(after, name, labels) - sample(before, name, labels) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert sample(after, name, unmatched) - sample(before, name, unmatched) == 1
    assert "/definitely/not/here" not in after and "missing-0" not in after
    assert "jobstream_api_sse_clients" in after
    assert sample(after, "jobstream_api_request_duration_seconds_count", {"route": "/api/import-logs/{runId}"}) >= 3


async def test_datetime_round_trip_is_utc_with_z(api: ApiHarness) -> None:
    source = new_url()
    doc = run_doc(f"tz-{uuid.uuid4().hex}", source, "completed", datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC))
    mongo_db(api.env).import_logs.insert_one(stored(doc))
    body = await api.json("GET", f"/api/import-logs/{doc['runId']}", 200)
    assert body["startedAt"] == "2025-03-01T23:59:59Z" and body["finishedAt"] == "2025-03-02T00:00:02Z"
