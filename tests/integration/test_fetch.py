"""fetch_feed against a real HTTP server on 127.0.0.1: retries, caps, timeouts, redirects, 304, gzip."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from agents.fetch import FetchError, FetchResult, Validators, fetch_feed
from models.egress import EgressPolicy

BODY = b"<rss><channel><title>t</title></channel></rss>"
LOCAL = EgressPolicy.from_settings("127.0.0.0/8", "1-65535")  # these servers listen on 127.0.0.1, random ports


class Server:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "ok":
            if request.headers.get("If-None-Match") == '"v1"':
                return web.Response(status=304)
            return web.Response(body=BODY, headers={"ETag": '"v1"', "Last-Modified": "Mon, 06 Jan 2025 10:00:00 GMT"})
        if name == "flaky" and self.hits[name] < 3:
            return web.Response(status=503)
        if name == "flaky":
            return web.Response(body=BODY)
        if name == "gone":
            return web.Response(status=404)
        if name == "big":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(100):
                await response.write(b"x" * 10_000)
            return response
        if name == "gzip":
            return web.Response(body=gzip.compress(BODY * 100), headers={"Content-Encoding": "gzip"})
        if name == "bomb":
            return web.Response(body=gzip.compress(b" " * 5_000_000), headers={"Content-Encoding": "gzip"})
        if name == "slow":
            await asyncio.sleep(5)
            return web.Response(body=BODY)
        if name == "loop":
            raise web.HTTPFound(f"{self.base}/loop")
        return web.Response(status=500)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/{name}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield srv
    await runner.cleanup()


async def fetch(url: str, validators: Validators | None = None, max_bytes: int = 200_000, timeout: float = 5.0) -> FetchResult:
    return await fetch_feed(url, policy=LOCAL, validators=validators or Validators(), timeout_seconds=timeout,
                            max_bytes=max_bytes, backoff_seconds=0.01)


async def test_conditional_get_remembers_validators_and_gets_304(server: Server) -> None:
    first = await fetch(f"{server.base}/ok")
    assert first.body == BODY and first.validators == Validators('"v1"', "Mon, 06 Jan 2025 10:00:00 GMT")
    second = await fetch(f"{server.base}/ok", first.validators)
    assert second.not_modified and second.body == b""


async def test_5xx_is_retried_with_backoff(server: Server) -> None:
    result = await fetch(f"{server.base}/flaky")
    assert result.body == BODY and result.attempts == 3 and server.hits["flaky"] == 3


async def test_4xx_is_not_retried(server: Server) -> None:
    with pytest.raises(FetchError, match="HTTP 404") as info:
        await fetch(f"{server.base}/gone")
    assert info.value.http_status == 404 and server.hits["gone"] == 1


async def test_size_cap_is_enforced_while_reading(server: Server) -> None:
    with pytest.raises(FetchError, match="MAX_FEED_BYTES"):
        await fetch(f"{server.base}/big", max_bytes=50_000)
    assert server.hits["big"] == 1


async def test_gzip_is_decoded_and_a_gzip_bomb_hits_the_cap(server: Server) -> None:
    assert (await fetch(f"{server.base}/gzip")).body == BODY * 100
    with pytest.raises(FetchError, match="MAX_FEED_BYTES"):
        await fetch(f"{server.base}/bomb", max_bytes=1_000_000)


async def test_slow_feed_times_out(server: Server) -> None:
    with pytest.raises(FetchError, match="timed out"):
        await fetch(f"{server.base}/slow", timeout=0.3)


async def test_redirect_loops_are_bounded(server: Server) -> None:
    with pytest.raises(FetchError, match="redirects"):
        await fetch(f"{server.base}/loop")


async def test_connection_refused_is_a_clear_error() -> None:
    with pytest.raises(FetchError, match="connection error"):
        await fetch("http://127.0.0.1:9/feed")
