"""Helpers of the API tests: an in-process API over real Kafka and MongoDB, an SSE reader, metric scraping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.context import ApiOptions
from models.runs import as_mongo, empty_run, iso, snapshot
from streams.settings import Settings
from tests.support import settings_of

T = TypeVar("T")


@dataclass
class ApiHarness:
    """One app built by ``create_app`` and served on a random port, with a client bound to it."""

    env: dict[str, str]
    settings: Settings
    app: web.Application
    client: TestClient[web.Request, web.Application]

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def json(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        """Request and check the status; error bodies must be ``{"error": str}`` JSON."""
        response = await self.client.request(method, path, **kwargs)
        text = await response.text()
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        if status == 204:
            assert text == ""
            return None
        assert response.content_type == "application/json", response.content_type
        body = json.loads(text)
        if status >= 400:
            assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
        return body

    async def close(self) -> None:
        await self.client.close()


async def start_api(env: Mapping[str, str], options: ApiOptions | None = None) -> ApiHarness:
    settings = settings_of(env)
    app = create_app(settings, options or fast_options())
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return ApiHarness(dict(env), settings, app, client)


def fast_options(**overrides: Any) -> ApiOptions:
    """Test options; the suite's many requests all come from 127.0.0.1, so the rate limits are lifted unless a test
    sets them."""
    defaults: dict[str, Any] = {"sse_ping_seconds": 15.0, "process_metrics": False, "health_timeout_seconds": 2.0,
                                "rate_limit_burst": 1_000_000, "rate_limit_per_second": 1_000.0,
                                "read_rate_limit_burst": 1_000_000, "read_rate_limit_per_second": 1_000.0}
    return ApiOptions(**{**defaults, **overrides})


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


# --- SSE -------------------------------------------------------------------------------------------


@dataclass
class SseMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Parses an event stream from an aiohttp client response, one message (or comment block) at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def message(self, timeout: float) -> SseMessage | None:
        """The next event or comment block; None at end of stream."""
        message = SseMessage()
        seen = False
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if seen:
                        message.data = "\n".join(data)
                        return message
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "":
                    message.comments.append(value)
                elif name == "event":
                    message.event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    message.id = value

    async def event(self, timeout: float, kind: str = "import-log",
                    where: Callable[[SseMessage], bool] = lambda _: True) -> SseMessage:
        """The next event of ``kind`` that satisfies ``where``; comments and other events are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await self.message(left)
            except TimeoutError:
                break
            if message is None:
                raise AssertionError(f"stream ended while waiting for a {kind} event")
            if message.event == kind and where(message):
                return message
        raise AssertionError(f"no {kind} event within {timeout:g}s")


async def produce_snapshots(settings: Settings, snapshots: list[dict[str, Any]]) -> None:
    """Publish snapshots on import.logs as the stats agent does (JSON value, key runId)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for doc in snapshots:
            await producer.send_and_wait(settings.topic("import.logs"), key=doc["runId"].encode(),
                                         value=json.dumps(doc).encode())
    finally:
        await producer.stop()


# --- documents -------------------------------------------------------------------------------------

BASE_TIME = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def run_doc(run_id: str, source_url: str, status: str, started: datetime | None, *, requested: datetime | None = None,
            counts: tuple[int, int, int, int] = (0, 0, 0, 0), failures: list[dict[str, str]] | None = None,
            error: str | None = None) -> dict[str, Any]:
    """An import_logs snapshot (as the stats agent builds it), with ISO-string timestamps."""
    run = empty_run(run_id)
    new, updated, unchanged, failed = counts
    finished = started + timedelta(seconds=3) if started and status in ("completed", "partial", "failed") else None
    run.update({
        "sourceUrl": source_url, "sourceName": source_url.rsplit("/", 1)[-1], "status": status,
        "requestedAt": iso(requested or (started - timedelta(seconds=1) if started else BASE_TIME)),
        "startedAt": iso(started) if started else None, "finishedAt": iso(finished) if finished else None,
        "durationMs": 3000 if finished else None, "totalFetched": sum(counts), "announced": True,
        "newJobs": new, "updatedJobs": updated, "unchangedJobs": unchanged, "failedJobs": failed,
        "failures": failures or [], "error": error,
    })
    return snapshot(run)


def stored(doc: Mapping[str, Any]) -> dict[str, Any]:
    return as_mongo(doc)


def job_doc(key: str, source_url: str, title: str, company: str, published: datetime | None) -> dict[str, Any]:
    """A ``jobs`` document as the sink writes it: ``_id`` is the dedupeKey."""
    return {
        "_id": key, "dedupeKey": key, "sourceUrl": source_url, "sourceName": "test", "externalId": key, "title": title,
        "company": company, "location": "Remote", "jobType": "Full-time", "categories": ["dev"], "region": None,
        "url": f"https://example.com/jobs/{key}", "description": f"About {title}", "publishedAt": published,
        "fingerprint": "f" * 40, "version": 1, "createdAt": published, "updatedAt": published, "lastRunId": "r1",
    }


def search_doc(job: Mapping[str, Any]) -> dict[str, Any]:
    """The ``job_search`` document of a job, built here so the API tests do not depend on the write path."""
    company = job.get("company") or ""
    return {"_id": job["dedupeKey"], "sourceUrl": job["sourceUrl"], "company": company.strip().casefold(),
            "text": f"{job.get('title') or ''}\n{company}".casefold(), "publishedAt": job["publishedAt"]}


def insert_jobs(db: Any, jobs: list[dict[str, Any]]) -> None:
    """Jobs and their job_search documents, as the sink stores them."""
    db.jobs.insert_many(jobs)
    db.job_search.insert_many([search_doc(job) for job in jobs])


# --- metrics ---------------------------------------------------------------------------------------


def sample(text: str, name: str, labels: Mapping[str, str]) -> float:
    """One sample of a Prometheus text exposition; 0 when the labelled child does not exist yet."""
    for family in text_string_to_metric_families(text):
        for entry in family.samples:
            if entry.name == name and all(entry.labels.get(k) == v for k, v in labels.items()):
                return float(entry.value)
    return 0.0


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200, response.status
        return await response.text()


@contextlib.asynccontextmanager
async def commands_watch(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer at the end of every ``commands`` partition: it sees only the commands sent from now on."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic("commands"), p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()


async def next_commands(consumer: AIOKafkaConsumer, timeout_ms: int) -> list[Any]:
    """The commands that arrive within ``timeout_ms``, decoded."""
    batches = await consumer.getmany(timeout_ms=timeout_ms)
    return [json.loads(r.value) for records in batches.values() for r in records if r.value]
