"""Issue 22's request guards over HTTP: reads behind the token, the SSE cap, bad header bytes, the registry cap,
the feed listing's queries, and read rate limits per address and per token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
from pymongo import monitoring

from api.context import HUB, LAST_RUNS
from models.runs import last_run_update
from tests.api.conftest import MakeApi
from tests.api.support import ApiHarness, SseReader, eventually, fast_options, run_doc, stored
from tests.api.test_http_api import new_url
from tests.support import mongo_db

pytestmark = pytest.mark.integration


def token_env(reads_need_it: bool = False) -> dict[str, str]:
    """An API_TOKEN of its own, and whether reads need it too."""
    return {"API_TOKEN": f"tok-{uuid.uuid4().hex}", "API_READS_REQUIRE_TOKEN": "true" if reads_need_it else "false"}


async def open_stream(api: ApiHarness, **kwargs: Any) -> aiohttp.ClientResponse:
    return await api.client.get("/api/import-logs/stream", headers={"Accept": "text/event-stream"}, **kwargs)


# --- reads behind the token ----------------------------------------------------------------------------


async def test_with_reads_requiring_the_token_only_token_holders_read(make_api: MakeApi) -> None:
    env = token_env(reads_need_it=True)
    api = await make_api(**env)
    bearer = {"Authorization": f"Bearer {env['API_TOKEN']}"}
    for path in ("/api/feeds", "/api/jobs", "/api/import-logs", "/api/import-logs/some-run", "/api/jobs/abc"):
        error = await api.json("GET", path, 401, headers={"Authorization": "Bearer wrong"})
        assert "token" in error["error"]
        await api.json("GET", path, 401)
    assert (await open_stream(api)).status == 401
    await api.json("GET", "/api/feeds", 200, headers=bearer)
    # what monitoring and the page itself need stays open
    assert (await api.client.get("/health")).status in (200, 503)
    assert (await api.client.get("/metrics")).status == 200
    await api.json("GET", "/api/openapi.json", 200)
    assert (await api.client.get("/")).status == 200
    assert (await api.client.get("/static/js/main.js")).status == 200


async def test_without_the_setting_reads_stay_open_with_a_token(make_api: MakeApi) -> None:
    api = await make_api(**token_env())
    await api.json("GET", "/api/feeds", 200)
    assert (await open_stream(api)).status == 200


async def test_the_login_form_gives_a_read_only_session_cookie(make_api: MakeApi) -> None:
    env = token_env(reads_need_it=True)
    api = await make_api(**env)
    await api.json("POST", "/api/session", 401, json={"token": "wrong"})
    await api.json("POST", "/api/session", 401, json={"token": "t\udcff"})
    await api.json("POST", "/api/session", 400, json={"token": 5})
    await api.json("POST", "/api/session", 403, json={"token": env["API_TOKEN"]}, headers={"Origin": "http://evil.example"})
    assert not api.client.session.cookie_jar.filter_cookies(api.client.make_url("/"))

    response = await api.client.post("/api/session", json={"token": env["API_TOKEN"]})
    assert response.status == 204
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert env["API_TOKEN"] not in cookie
    # the cookie (kept by the client's jar) reads, the EventSource stream included
    await api.json("GET", "/api/feeds", 200)
    stream = await open_stream(api)
    assert stream.status == 200 and stream.content_type == "text/event-stream"
    stream.close()
    # but it is no key for changes: those need the header
    await api.json("POST", "/api/feeds", 401, json={"url": new_url()})
    await api.json("POST", "/api/feeds", 201, json={"url": new_url()},
                   headers={"Authorization": f"Bearer {env['API_TOKEN']}"})
    # logging out ends it
    assert (await api.client.delete("/api/session")).status == 204
    await api.json("GET", "/api/feeds", 401)


async def test_a_forged_or_foreign_session_cookie_reads_nothing(make_api: MakeApi) -> None:
    api = await make_api(**token_env(reads_need_it=True))
    other = await make_api(**token_env(reads_need_it=True))
    await other.json("POST", "/api/session", 204, json={"token": other.env["API_TOKEN"]})
    [foreign] = [c.value for c in other.client.session.cookie_jar if c.key == "jobstream_session"]
    for value in (foreign, "v1.99999999999.00", "v1." + "9" * 5000 + ".x", "garbage"):
        await api.json("GET", "/api/feeds", 401, headers={"Cookie": f"jobstream_session={value}"})


async def test_a_session_without_api_token_is_404(api: ApiHarness) -> None:
    await api.json("POST", "/api/session", 404, json={"token": "anything"})


# --- the SSE cap -------------------------------------------------------------------------------------


async def test_streams_beyond_max_sse_clients_get_503(make_api: MakeApi) -> None:
    api = await make_api(MAX_SSE_CLIENTS="2")
    first, second = await open_stream(api), await open_stream(api)
    assert first.status == second.status == 200
    for stream in (first, second):  # both are really open: each got its first bytes
        assert await SseReader(stream).message(10) is not None
    refused = await open_stream(api)
    assert refused.status == 503 and refused.content_type == "application/json"
    body = await refused.json()
    assert "MAX_SSE_CLIENTS=2" in body["error"] and int(refused.headers["Retry-After"]) >= 1
    await api.json("GET", "/api/feeds", 200)  # other reads are not affected
    first.close()  # a slot comes back when a client leaves

    async def reopened() -> aiohttp.ClientResponse | None:
        response = await open_stream(api)
        if response.status == 200:
            return response
        response.close()
        return None

    third = await eventually(reopened, 20, "a stream slot given back")
    third.close()
    second.close()


# --- bad bytes in headers -------------------------------------------------------------------------------


async def raw_request(api: ApiHarness, head: bytes) -> tuple[int, bytes]:
    """Send bytes aiohttp's client would refuse to send; the status and the start of the answer."""
    port = int(api.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(20):
            status_line = await reader.readline()
            rest = await reader.read(2000)
    finally:
        writer.close()
    return int(status_line.split()[1]), rest


BAD_HEADERS = [
    ("GET", "/api/feeds", b"Host: 127.0.0.1\xff\xfe", 400),
    ("GET", "/api/feeds", b"Host: \xc3\xa9vil.example", 400),
    ("POST", "/api/import/run", b"Origin: http://127.0.0.1\xff", 403),
    ("POST", "/api/import/run", b"Referer: http://\xff\xfe/", 403),
    ("GET", "/api/feeds", b"Cookie: jobstream_session=\xff\xfe; b=\"\xc0\"", 401),
    ("GET", "/api/feeds", b"Authorization: Bearer \xff", 401),
    ("POST", "/api/feeds", b"Authorization: Bearer \xff", 401),
    ("POST", "/api/session", b"Content-Type: \xff/\xfe", 400),  # no body: the body is missing
    ("POST", "/api/session", b"Content-Type: \xff/\xfe\r\nContent-Length: 13\r\n\r\n{\"token\":\"x\"}", 415),
    ("POST", "/api/session", b"Content-Type: application/json; charset=\xff\r\nContent-Length: 13\r\n\r\n{\"token\":\"x\"}",
     401),
]


@pytest.mark.parametrize(("method", "path", "header", "status"), BAD_HEADERS)
async def test_bad_bytes_in_a_header_are_4xx_never_500(make_api: MakeApi, method: str, path: str, header: bytes,
                                                       status: int) -> None:
    api = await make_api(**token_env(reads_need_it=True))
    host = b"" if header.startswith(b"Host:") else b"Host: 127.0.0.1\r\n"
    if b"Content-Length" in header:  # the header's case carries its own body
        head = f"{method} {path} HTTP/1.1\r\n".encode() + host + b"Connection: close\r\n" + header
    else:
        head = (f"{method} {path} HTTP/1.1\r\n".encode() + host + header + b"\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    got, rest = await raw_request(api, head)
    assert got == status, rest
    assert b'{"error":' in rest


@pytest.mark.parametrize("seq", [b"\xc2\xb2", b"9" * 5000, b"\xff\xfe"])
async def test_a_last_event_id_with_bad_bytes_gets_a_resync_not_a_broken_stream(api: ApiHarness, seq: bytes) -> None:
    boot = api.app[HUB].boot
    head = (b"GET /api/import-logs/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            b"Last-Event-ID: " + boot.encode() + b"-" + seq + b"\r\nConnection: close\r\n\r\n")
    port = int(api.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        seen = b""
        async with asyncio.timeout(20):
            while b"event: resync" not in seen:
                chunk = await reader.read(1000)
                assert chunk, f"the stream ended without a resync event: {seen!r}"
                seen += chunk
        assert seen.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


# --- the registry's cap and its listing ---------------------------------------------------------------------


async def test_the_registry_holds_at_most_max_feeds(make_api: MakeApi) -> None:
    api = await make_api(MAX_FEEDS="2")
    first = await api.json("POST", "/api/feeds", 201, json={"url": new_url()})
    await api.json("POST", "/api/feeds", 201, json={"url": new_url()})
    error = await api.json("POST", "/api/feeds", 409, json={"url": new_url()})
    assert "MAX_FEEDS=2" in error["error"]
    assert mongo_db(api.env).feeds.count_documents({}) == 2
    await api.json("DELETE", f"/api/feeds/{first['id']}", 204)
    # one place free: of concurrent adds, exactly one takes it
    answers = await asyncio.gather(*(api.client.post("/api/feeds", json={"url": new_url()}) for _ in range(20)))
    assert sorted(answer.status for answer in answers) == [201] + [409] * 19
    assert mongo_db(api.env).feeds.count_documents({}) == 2


class CommandCounter(monitoring.CommandListener):
    """Counts the commands sent to one database while ``active`` (pymongo listeners cannot be unregistered)."""

    def __init__(self) -> None:
        self.database = ""
        self.commands: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            name = event.command_name
            self.commands.append((name, str(event.command.get(name)), event.command.get("limit")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COUNTER = CommandCounter()
monitoring.register(COUNTER)  # for the clients made after this import: the APIs these tests start


async def test_listing_feeds_reads_the_registry_in_one_bounded_find(make_api: MakeApi) -> None:
    api = await make_api(MAX_FEEDS="50")
    urls = [new_url(f"f{n}") for n in range(6)]
    for url in urls:
        await api.json("POST", "/api/feeds", 201, json={"url": url})
    newer = run_doc(f"r-{uuid.uuid4().hex}", urls[0], "failed", None)
    newer["requestedAt"] = "2030-01-01T00:00:00Z"
    update = last_run_update(newer)  # what the stats agent writes as it projects the run
    assert update is not None
    mongo_db(api.env).feeds.update_one(*update)
    COUNTER.database, COUNTER.commands = api.env["MONGO_DB"], []
    try:
        listing = await api.json("GET", "/api/feeds", 200)
    finally:
        COUNTER.database = ""
    assert [item["url"] for item in listing["items"]] == urls
    assert listing["items"][0]["lastRun"]["runId"] == newer["runId"]
    assert [feed["lastRun"] for feed in listing["items"][1:]] == [None] * 5
    assert [c for c in COUNTER.commands if c[1] == "feeds"] == [("find", "feeds", 50)]  # one find, bounded by MAX_FEEDS
    assert [c for c in COUNTER.commands if c[1] == "import_logs"] == [], "the latest runs come with the feeds"


async def test_feeds_registered_before_their_last_run_was_kept_take_one_query_for_all(make_api: MakeApi) -> None:
    """Their runs come from import_logs: one aggregation on MongoDB, one indexed lookup each on FerretDB 1.24."""
    api = await make_api(MAX_FEEDS="50")
    urls = [new_url(f"old{n}") for n in range(3)]
    mongo_db(api.env).feeds.insert_many([{"url": url, "name": url, "enabled": True} for url in urls])  # no lastRun
    older, newer = (run_doc(f"r-{uuid.uuid4().hex}", urls[0], status, None) for status in ("completed", "failed"))
    newer["requestedAt"] = "2030-01-01T00:00:00Z"
    mongo_db(api.env).import_logs.insert_many([stored(older), stored(newer)])
    await api.json("GET", "/api/feeds", 200)  # the store's answer to $first is known from here on
    COUNTER.database, COUNTER.commands = api.env["MONGO_DB"], []
    try:
        listing = await api.json("GET", "/api/feeds", 200)
    finally:
        COUNTER.database = ""
    mine = {item["url"]: item["lastRun"] for item in listing["items"] if item["url"] in urls}
    assert mine[urls[0]]["runId"] == newer["runId"] and mine[urls[1]] is None and mine[urls[2]] is None
    on_runs = [c for c in COUNTER.commands if c[1] == "import_logs"]
    if api.app[LAST_RUNS].grouping:  # MongoDB: one aggregation, whatever the number of feeds
        assert [c[0] for c in on_runs] == ["aggregate"]
    else:  # FerretDB 1.24 has no $first: one indexed lookup per such feed (see api/lastruns.py)
        assert len(on_runs) == len(urls)


# --- read rate limits -------------------------------------------------------------------------------------


async def get_from(api: ApiHarness, address: str, path: str, headers: dict[str, str] | None = None) -> int:
    """A GET whose connection comes from ``address`` (any 127.x: the API sees it as another client)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(api.base_url + path, headers={"Host": "127.0.0.1", **(headers or {})}) as response:
        await response.read()
        return response.status


async def test_reads_are_rate_limited_per_address(make_api: MakeApi) -> None:
    api = await make_api(fast_options(read_rate_limit_burst=3, read_rate_limit_per_second=0.01))
    for _ in range(3):
        await api.json("GET", "/api/feeds", 200)
    response = await api.client.get("/api/jobs")
    body = await response.json()
    assert response.status == 429 and body["error"].startswith("too many requests")
    assert int(response.headers["Retry-After"]) >= 1
    assert (await open_stream(api)).status == 429
    assert (await api.client.get("/health")).status in (200, 503)  # monitoring is never limited
    assert (await api.client.get("/metrics")).status == 200
    assert await get_from(api, "127.0.0.2", "/api/feeds") == 200  # another address has its own budget


async def test_a_token_used_from_many_addresses_shares_one_budget(make_api: MakeApi) -> None:
    env = token_env()
    api = await make_api(fast_options(read_rate_limit_burst=3, read_rate_limit_per_second=0.01), **env)
    bearer = {"Authorization": f"Bearer {env['API_TOKEN']}"}
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert await get_from(api, address, "/api/feeds", bearer) == 200
    assert await get_from(api, "127.0.0.5", "/api/feeds", bearer) == 429  # the token's budget is spent
    assert await get_from(api, "127.0.0.5", "/api/feeds") == 200  # the address's own is not
    # a wrong token is no token: it is charged to the address only (and refused where the token is needed)
    assert await get_from(api, "127.0.0.6", "/api/feeds", {"Authorization": "Bearer wrong"}) == 200
