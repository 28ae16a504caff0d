"""Lists that page by cursor without gaps or repeats while new items arrive, and a store that hangs.

Real store, real Kafka: every test runs its own API on its own database. The hung store is either a TCP
server that accepts and never answers, or a proxy to the real store that stops passing bytes mid-life.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo.uri_parser import parse_uri

from api.context import ApiOptions
from tests.api.conftest import MakeApi
from tests.api.support import BASE_TIME, ApiHarness, eventually, fast_options, insert_jobs, job_doc, run_doc, stored
from tests.support import mongo_db

pytestmark = pytest.mark.integration

LIMIT = 4


async def walk(api: ApiHarness, path: str, params: dict[str, str], tie: str,
               between: Callable[[int], Awaitable[None]]) -> list[str]:
    """Every page of a list by its ``next`` cursor, calling ``between(n)`` after page n; the ids in order."""
    seen: list[str] = []
    after: str | None = None
    for number in range(1, 1000):
        body = await api.json("GET", path, 200, params={**params, "limit": str(LIMIT), **({"after": after} if after else {})})
        assert body["page"] == number and body["limit"] == LIMIT
        assert len(body["items"]) == LIMIT or body["next"] is None, body
        seen += [item[tie] for item in body["items"]]
        after = body["next"]
        if after is None:
            return seen
        await between(number)
    raise AssertionError("the walk never ended")


def newest_first(docs: list[dict[str, Any]], field: str, tie: str, tie_descending: bool) -> list[str]:
    """The API's order computed here: ``field`` descending with nulls last, then ``tie``."""
    dated = sorted((d for d in docs if d.get(field) is not None), key=lambda d: d[tie], reverse=tie_descending)
    dated.sort(key=lambda d: d[field], reverse=True)  # stable: ties keep the tie order
    undated = sorted((d for d in docs if d.get(field) is None), key=lambda d: d[tie], reverse=tie_descending)
    return [d[tie] for d in dated + undated]


# --- jobs ------------------------------------------------------------------------------------------


async def test_job_pages_by_cursor_have_no_gap_and_no_repeat_while_jobs_arrive(make_api: MakeApi) -> None:
    api = await make_api()
    db = mongo_db(api.env)
    main, other = "https://jobs.example.com/main.xml", "https://jobs.example.com/other.xml"
    jobs = []
    for n in range(30):  # 7 distinct dates (ties galore) and some postings without a date
        published = None if n % 9 == 4 else BASE_TIME + timedelta(hours=n % 7)
        title = f"{'Python' if n % 3 else 'Go'} developer {n}"
        company = ["Acme Corp", "ACME corp ", "Globex"][n % 3]
        jobs.append(job_doc(f"{uuid.uuid4().hex[:8]}-{n:02d}", main if n % 4 else other, title, company, published))
    insert_jobs(db, jobs)
    arrivals = iter(range(1000))

    async def arrive(_page: int) -> None:
        """Two new postings at the head, matching every filter walked."""
        fresh = []
        for _ in range(2):
            n = next(arrivals)
            fresh.append(job_doc(f"new-{n:03d}", main, f"Python developer new {n}", "Acme Corp",
                                 BASE_TIME + timedelta(days=30, minutes=n)))
        insert_jobs(db, fresh)
        jobs.extend(fresh)

    cases: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
        ({}, lambda job: True),
        ({"source": main}, lambda job: job["sourceUrl"] == main),
        ({"company": "acme CORP"}, lambda job: job["company"].strip().casefold() == "acme corp"),
        ({"q": "PYTHON"}, lambda job: "python" in job["title"].casefold()),
        ({"q": "python", "source": other}, lambda job: "python" in job["title"].casefold() and job["sourceUrl"] == other),
    ]
    for params, matches in cases:
        # what is stored when the walk starts (earlier walks' arrivals included), in the API's order
        expected = newest_first([job for job in jobs if matches(job)], "publishedAt", "_id", tie_descending=False)
        assert len(expected) >= LIMIT, params
        walked = await walk(api, "/api/jobs", params, "dedupeKey", arrive)
        assert walked == expected, params  # same order, no repeat, no gap; arrivals are ahead of every cursor


async def test_job_search_lists_full_jobs_in_search_order(make_api: MakeApi) -> None:
    api = await make_api()
    source = "https://jobs.example.com/search.xml"
    jobs = [job_doc(f"k{n}", source, title, company, BASE_TIME + timedelta(days=n))
            for n, (title, company) in enumerate([("Senior Python Engineer", "Acme"), ("Analyst", "Pythonic Ltd"),
                                                  ("Go Engineer", "Acme"), ("python tutor", "School")])]
    insert_jobs(mongo_db(api.env), jobs)
    body = await api.json("GET", "/api/jobs", 200, params={"q": "python", "total": "1"})
    assert [item["dedupeKey"] for item in body["items"]] == ["k3", "k1", "k0"]
    assert (body["total"], body["totalExact"], body["next"]) == (3, True, None)
    assert body["items"][0] == {key: value for key, value in jobs[3].items() if key not in ("_id", "description")} | {
        "publishedAt": "2025-01-09T10:00:00Z", "createdAt": "2025-01-09T10:00:00Z", "updatedAt": "2025-01-09T10:00:00Z"}
    by_company = await api.json("GET", "/api/jobs", 200, params={"company": "ACME"})
    assert [item["dedupeKey"] for item in by_company["items"]] == ["k2", "k0"]
    unfiltered = await api.json("GET", "/api/jobs", 200, params={"limit": "1"})
    assert (unfiltered["total"], unfiltered["totalExact"]) == (4, False)  # the estimated count: no scan


async def test_search_text_with_punctuation_and_symbols_is_matched_literally(make_api: MakeApi) -> None:
    """The escaped literal pattern must mean the same thing to the store as to the test: plain substrings."""
    api = await make_api()
    source = "https://jobs.example.com/punctuation.xml"
    titles = ['Node.js/React dev @ "Acme", 50% remote – 5k€ [senior]', "Nodexjs React dev", "C:\\ tools {win} ^$|?*+#&~"]
    jobs = [job_doc(f"p{n}", source, title, "Acme", BASE_TIME + timedelta(days=n)) for n, title in enumerate(titles)]
    insert_jobs(mongo_db(api.env), jobs)
    for q, expected in [("node.js/react dev @ \"acme\"", ["p0"]), ("50% REMOTE – 5K€ [", ["p0"]), (".js", ["p0"]),
                        ("c:\\ tools {win} ^$|?*+#&~", ["p2"]), ("react dev", ["p1", "p0"]), ("n.de", [])]:
        body = await api.json("GET", "/api/jobs", 200, params={"q": q})
        assert [item["dedupeKey"] for item in body["items"]] == expected, q


# --- import runs -----------------------------------------------------------------------------------


async def test_run_pages_by_cursor_have_no_gap_and_no_repeat_while_runs_arrive(make_api: MakeApi) -> None:
    api = await make_api()
    db = mongo_db(api.env)
    main, other = "https://runs.example.com/main.xml", "https://runs.example.com/other.xml"
    statuses = ["completed", "failed", "partial", "completed", "running"]
    runs = []
    for n in range(26):  # 6 distinct request times: ties broken by runId, newest (descending) first
        requested = BASE_TIME + timedelta(minutes=n % 6)
        doc = run_doc(f"run-{uuid.uuid4().hex[:6]}-{n:02d}", main if n % 3 else other, statuses[n % 5],
                      requested + timedelta(seconds=1), requested=requested)
        runs.append(stored(doc))
    orphan = stored(run_doc("run-orphan", main, "pending", None))
    orphan["requestedAt"] = None  # a run whose "requested" event never arrived: listed last
    runs.append(orphan)
    db.import_logs.insert_many(runs)
    arrivals = iter(range(1000))

    async def arrive(_page: int) -> None:
        fresh = []
        for status in ("completed", "failed"):
            n = next(arrivals)
            at = BASE_TIME + timedelta(days=1, minutes=n)
            fresh.append(stored(run_doc(f"run-new-{n:03d}", main, status, at + timedelta(seconds=1), requested=at)))
        db.import_logs.insert_many(fresh)
        runs.extend(fresh)

    since = BASE_TIME + timedelta(minutes=2)
    cases: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
        ({}, lambda run: True),
        ({"source": main}, lambda run: run["sourceUrl"] == main),
        ({"status": "completed"}, lambda run: run["status"] == "completed"),
        ({"status": "completed,failed", "source": main},
         lambda run: run["status"] in ("completed", "failed") and run["sourceUrl"] == main),
        ({"since": since.isoformat()}, lambda run: run["requestedAt"] is not None and run["requestedAt"] >= since),
    ]
    for params, matches in cases:
        expected = newest_first([run for run in runs if matches(run)], "requestedAt", "runId", tie_descending=True)
        assert len(expected) >= LIMIT, params
        walked = await walk(api, "/api/import-logs", params, "runId", arrive)
        assert walked == expected, params


# --- a store that hangs ----------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections and never answers: a store that is up but hung from the start."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass  # read and drop: never a reply

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


class FreezableProxy:
    """A TCP proxy to the real store that can stop passing bytes: the store hangs with connections open."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def timed(api: ApiHarness, method: str, path: str, status: int, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    body = await api.json(method, path, status, **kwargs)
    return body, time.monotonic() - started


async def timed_health(api: ApiHarness) -> tuple[int, dict[str, str], float]:
    """/health's status, body (Health shape, not Error) and how long it took."""
    started = time.monotonic()
    response = await api.client.get("/health")
    body = await response.json()
    return response.status, body, time.monotonic() - started


def names_no_host(text: str, port: int) -> bool:
    return "127.0.0.1" not in text and "localhost" not in text and str(port) not in text


async def test_a_store_that_never_answers_makes_health_503_within_5s_and_reads_503(make_api: MakeApi) -> None:
    silent = SilentServer()
    port = await silent.start()
    try:
        defaults = ApiOptions()
        assert defaults.health_timeout_seconds < 5
        api = await make_api(fast_options(health_timeout_seconds=defaults.health_timeout_seconds),
                             MONGO_URL=f"mongodb://127.0.0.1:{port}")
        assert api.settings.api_store_timeout_seconds == 5  # the production default deadline

        status, health, elapsed = await timed_health(api)
        assert status == 503 and elapsed < 5, (status, elapsed)
        assert health["status"] == "error" and health["kafka"] == "ok" and health["mongo"].startswith("error: ")
        assert names_no_host(health["mongo"], port), health

        error, elapsed = await timed(api, "GET", "/api/jobs", 503)
        assert error == {"error": "store unavailable"} and elapsed < 6.5, elapsed
    finally:
        await silent.close()


async def test_a_store_that_hangs_mid_life_gives_503_then_recovers(make_api: MakeApi, shared_env: dict[str, str]) -> None:
    host, port = parse_uri(shared_env["MONGO_URL"])["nodelist"][0]
    proxy = FreezableProxy(host, port)
    proxy_port = await proxy.start()
    try:
        api = await make_api(fast_options(health_timeout_seconds=3.0), MONGO_URL=f"mongodb://127.0.0.1:{proxy_port}",
                             API_STORE_TIMEOUT_SECONDS="2")

        async def healthy() -> bool:
            # The store's part: the shared topics may hold run requests no worker reads (workers: error).
            response = await api.client.get("/health")
            return bool((await response.json())["mongo"] == "ok")

        await eventually(healthy, 30, "the API to reach the store through the proxy")
        await api.json("GET", "/api/jobs", 200)

        proxy.freeze()
        status, health, elapsed = await timed_health(api)
        assert status == 503 and elapsed < 5, (status, elapsed)
        assert health["mongo"] == "error: no answer within 2s" and health["kafka"] == "ok", health
        for path in ("/api/jobs?q=python", "/api/import-logs", "/api/import-logs/some-run", "/api/feeds"):
            error, elapsed = await timed(api, "GET", path, 503)
            assert error == {"error": "store unavailable"} and elapsed < 3.5, (path, elapsed)
        error, elapsed = await timed(api, "POST", "/api/feeds", 503, json={"url": "https://example.com/hung.xml"})
        assert error == {"error": "store unavailable"} and elapsed < 3.5, elapsed

        proxy.thaw()
        await eventually(healthy, 60, "the API to recover when the store answers again", interval=0.5)
        await api.json("GET", "/api/import-logs", 200)
    finally:
        await proxy.close()

