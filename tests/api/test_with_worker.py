"""The API in front of a real worker: a run requested over HTTP is imported, streamed live and counted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agents.metrics import feed_label
from models.runs import FINISHED
from tests.api.support import ApiHarness, SseReader, eventually, sample, scrape, start_api
from tests.support import FeedServer, Process, rss

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ITEMS = 12


def postings(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"guid": f"{prefix}-{i}", "title": f"Platform Engineer {i}", "company": "Initech"} for i in range(n)]


async def test_run_requested_over_the_api_is_imported_streamed_and_counted(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer
) -> None:
    start_worker()
    url = feed_server.put(f"api-{uuid.uuid4().hex[:8]}.xml", rss(postings(ITEMS, uuid.uuid4().hex[:6])))
    worker_metrics = f"http://127.0.0.1:{pipeline_env['WORKER_METRICS_PORT']}/metrics"
    created = {"feed": feed_label(url), "outcome": "created"}
    api: ApiHarness = await start_api(pipeline_env)
    try:
        before = sample(await scrape(worker_metrics), "jobstream_items_total", created)
        await api.json("POST", "/api/feeds", 201, json={"url": url, "name": "Worker test feed"})
        stream = await api.client.get("/api/import-logs/stream")
        reader = SseReader(stream)

        accepted = await api.json("POST", "/api/import/run", 202, json={"feeds": [url]})
        [run] = accepted["runs"]
        assert run["sourceUrl"] == url

        finished = await reader.event(120, where=lambda m: m.json["runId"] == run["runId"] and m.json["status"] in FINISHED)
        stream.close()
        assert finished.json["status"] == "completed", finished.json
        assert (finished.json["totalFetched"], finished.json["newJobs"]) == (ITEMS, ITEMS)

        detail = await api.json("GET", f"/api/import-logs/{run['runId']}", 200)
        assert detail["status"] == "completed" and detail["sourceName"] == "Worker test feed"
        assert detail["failures"] == [] and detail["totalImported"] == ITEMS
        listed = await api.json("GET", "/api/import-logs", 200, params={"source": url})
        assert [item["runId"] for item in listed["items"]] == [run["runId"]]
        jobs = await api.json("GET", "/api/jobs", 200, params={"source": url, "q": "platform", "limit": "5", "total": "1"})
        assert jobs["total"] == ITEMS and len(jobs["items"]) == 5
        feeds = await api.json("GET", "/api/feeds", 200)
        assert [feed["lastRun"]["status"] for feed in feeds["items"] if feed["url"] == url] == ["completed"]

        async def moved() -> float | None:
            delta = sample(await scrape(worker_metrics), "jobstream_items_total", created) - before
            return delta if delta >= ITEMS else None

        assert await eventually(moved, 30, "the worker's created counter") == ITEMS
        api_metrics = await (await api.client.get("/metrics")).text()
        assert sample(api_metrics, "jobstream_api_runs_requested_total", {}) == 1
        assert sample(api_metrics, "jobstream_api_sse_events_total", {}) >= 2
        assert sample(api_metrics, "jobstream_api_requests_total",
                      {"method": "POST", "route": "/api/import/run", "status": "202"}) == 1
    finally:
        await api.close()
