"""The egress policy applied by fetch_feed: every hop checked, the checked address pinned.

Only loopback is ever connected to (servers on 127.0.0.1 and 127.0.0.2); every refusal is
asserted to have sent nothing, by the hit counters of the server that would have answered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from agents.fetch import FetchError, RefusedError, Validators, check_destination, fetch_feed
from models.egress import REFUSED, EgressPolicy
from tests.support import LoopbackServer

BODY = b"<rss><channel><title>t</title></channel></rss>"


class Server(LoopbackServer):
    """A feed server on one loopback address that counts requests and redirects where told."""

    async def answer(self, name: str, request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, headers={"X-Internal-State": "secret"})


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """``a`` on 127.0.0.1 (the allowed feed host of these tests) and ``b`` on 127.0.0.2 (never allowed here)."""
    a, b = Server("127.0.0.1"), Server("127.0.0.2")
    await a.start()
    await b.start()
    yield a, b
    for server in (a, b):
        await server.stop()


async def fetch(url: str, policy: EgressPolicy) -> bytes:
    result = await fetch_feed(url, policy=policy, validators=Validators(), timeout_seconds=5.0, max_bytes=100_000,
                              backoff_seconds=0.01)
    return result.body


def only_a(a: Server) -> EgressPolicy:
    """127.0.0.1 alone, on a's port alone."""
    return EgressPolicy.from_settings("127.0.0.1/32", str(a.port))


async def assert_refused(url: str, policy: EgressPolicy, *silent: Server) -> None:
    with pytest.raises(RefusedError) as info:
        await fetch(url, policy)
    assert str(info.value) == REFUSED and info.value.http_status is None
    for server in silent:
        assert server.hits == [], f"{server.host} was contacted: {server.hits}"


async def test_default_policy_refuses_loopback_and_sends_nothing(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    await assert_refused(a.url("feed"), EgressPolicy(), a)  # loopback and a port outside 80/443
    await assert_refused(a.url("feed"), EgressPolicy.from_settings("", "1-65535"), a)  # loopback alone is enough


async def test_allowed_destination_is_fetched(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    assert await fetch(a.url("feed"), only_a(a)) == BODY
    assert a.hits == ["feed"]


@pytest.mark.parametrize(
    "host",
    ["0x7f000001", "2130706433", "127.1", "017700000001", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost"],
)
async def test_loopback_written_oddly_is_refused(servers: tuple[Server, Server], host: str) -> None:
    """The resolver turns each form into 127.0.0.1 (or ::1): the policy judges what it resolved to."""
    a, _ = servers
    await assert_refused(f"http://{host}:{a.port}/feed", EgressPolicy.from_settings("", "1-65535"), a)


@pytest.mark.parametrize("host", ["0x7f000001", "2130706433", "127.1", "localhost", "[::1]", "169.254.169.254",
                                  "[fe80::1]", "100.64.0.1", "10.0.0.1", "[64:ff9b::7f00:1]", "0.0.0.0"])  # noqa: S104
async def test_check_destination_refuses_without_connecting(host: str) -> None:
    """Only the resolver runs (numeric forms and localhost resolve locally); nothing is sent anywhere."""
    with pytest.raises(RefusedError):
        await check_destination(URL(f"http://{host}/feed"), EgressPolicy())


async def test_redirect_to_loopback_is_refused_and_leaks_nothing(servers: tuple[Server, Server]) -> None:
    a, b = servers
    policy = EgressPolicy.from_settings("127.0.0.1/32", f"{a.port},{b.port}")
    a.redirects["hop"] = b.url("internal")  # 127.0.0.2: loopback, not exempt
    await assert_refused(a.url("hop"), policy, b)
    assert a.hits == ["hop"]
    a.redirects["hop6"] = f"http://[::1]:{b.port}/internal"
    await assert_refused(a.url("hop6"), policy, b)


async def test_redirect_to_a_disallowed_port_is_refused(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    other = Server("127.0.0.1")
    await other.start()
    try:
        a.redirects["hop"] = other.url("internal")  # same allowed host, port not in the list
        await assert_refused(a.url("hop"), only_a(a), other)
    finally:
        assert other.runner is not None
        await other.runner.cleanup()


async def test_redirect_chain_is_checked_at_every_hop(servers: tuple[Server, Server]) -> None:
    a, b = servers
    a.redirects.update({"one": a.url("two"), "two": a.url("three"), "three": b.url("internal")})
    await assert_refused(a.url("one"), EgressPolicy.from_settings("127.0.0.1/32", "1024-65535"), b)
    assert a.hits == ["one", "two", "three"]
    a.redirects.update({"four": a.url("five"), "five": a.url("feed")})
    assert await fetch(a.url("four"), only_a(a)) == BODY


async def test_redirect_to_another_scheme_is_refused(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    a.redirects["file"] = "file:///etc/passwd"
    await assert_refused(a.url("file"), only_a(a))


async def test_the_checked_address_is_the_one_connected_to(
    servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to an allowed address once, then to a refused one; only the first is used."""
    a, b = servers
    loop = asyncio.get_running_loop()
    answers = ["127.0.0.1", "127.0.0.2"]
    asked: list[str] = []

    async def rebinding_getaddrinfo(host: Any, port: Any, **_: Any) -> list[Any]:
        asked.append(str(host))
        ip = answers[min(len(asked), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding_getaddrinfo)
    policy = EgressPolicy.from_settings("127.0.0.1/32", f"{a.port},{b.port}")
    assert await fetch(f"http://feeds.rebind.test:{a.port}/feed", policy) == BODY
    assert asked == ["feeds.rebind.test"], "aiohttp must not resolve the name again"
    assert a.hits == ["feed"] and b.hits == []


async def test_a_refusal_is_not_retried_and_other_errors_still_are(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    with pytest.raises(RefusedError):
        await fetch_feed(a.url("feed"), policy=EgressPolicy(), validators=Validators(), timeout_seconds=5.0,
                         max_bytes=1000, retries=3, backoff_seconds=5.0)  # a retry would take 5 s more
    with pytest.raises(FetchError, match="connection error"):
        await fetch("http://127.0.0.1:9/feed", EgressPolicy.from_settings("127.0.0.0/8", "9"))
