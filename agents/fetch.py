"""HTTP fetching of one feed: egress policy, conditional GET, timeout, size cap while reading, bounded retries.

Every hop (the feed URL and each redirect) is checked before anything is sent: its host is
resolved here (``loop.getaddrinfo``, which also turns ``0x7f000001``, ``2130706433`` or ``127.1``
into the address they stand for), every address must pass the egress policy
(``models/egress.py``), and the connection then goes to exactly those addresses: the fetch's
own connector has a resolver that answers only with the checked addresses, so a DNS answer
that changes between the check and the connect (rebinding) cannot redirect it. A refused
destination is a :class:`RefusedError` whose message says nothing about the target.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from models.egress import REFUSED, EgressPolicy
from models.text import printable
from streams.retry import Backoff, Retry, retry

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRIES = 3
BACKOFF_SECONDS = 0.5
USER_AGENT = "jobstream/1.0 (+https://github.com/jobstream/jobstream)"


class FetchError(Exception):
    """The feed could not be fetched; ``str()`` is the message for ``import_logs.error``."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class RefusedError(FetchError):
    """The destination is not allowed by the egress policy: never retried, never described."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


@dataclass(frozen=True, slots=True)
class Validators:
    """What a server told us last time, sent back so an unchanged feed costs a 304."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    http_status: int
    body: bytes | bytearray
    validators: Validators
    attempts: int

    @property
    def not_modified(self) -> bool:
        return self.http_status == 304


class PinnedResolver(AbstractResolver):
    """Answers only with the addresses checked for this fetch; any other host fails to resolve."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], list[ResolveResult]] = {}

    def pin(self, host: str, port: int, addresses: list[ResolveResult]) -> None:
        self._pins[(host, port)] = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = self._pins.get((host, port))
        if not addresses:
            raise OSError(f"{host}:{port} was not checked by the egress policy")
        matching = [a for a in addresses if family in (socket.AF_UNSPEC, a["family"])]
        if not matching:
            raise OSError(f"{host}:{port} has no checked address of family {family!r}")
        return matching

    async def close(self) -> None:
        return None


async def check_destination(url: URL, policy: EgressPolicy) -> list[ResolveResult]:
    """Resolve ``url``'s host and return its addresses if every one is allowed; else RefusedError.

    Raises FetchError (retryable) when the name does not resolve. Sends nothing to the target.
    """
    host, port = url.raw_host, url.port
    if url.scheme not in ("http", "https") or not host or port is None:
        raise RefusedError
    if not policy.port_allowed(port):
        logger.warning("fetch refused host=%s port=%d reason=port not in FETCH_ALLOW_PORTS", host, port)
        raise RefusedError
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host[:200]}") from exc
    addresses: list[ResolveResult] = []
    for family, _type, proto, _canonical, sockaddr in infos:
        ip = str(sockaddr[0])
        reason = policy.check(ip, port)
        if reason is not None:  # one bad address is enough: a name that mixes them is not trusted
            logger.warning("fetch refused host=%s ip=%s port=%d reason=%s", host, ip, port, reason)
            raise RefusedError
        addresses.append({"hostname": host, "host": ip, "port": port, "family": family, "proto": proto,
                          "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
    if not addresses:
        raise FetchError(f"cannot resolve host {host[:200]}")
    return addresses


async def fetch_feed(
    url: str,
    *,
    policy: EgressPolicy,
    validators: Validators,
    timeout_seconds: float,
    max_bytes: int,
    retries: int = RETRIES,
    backoff_seconds: float = BACKOFF_SECONDS,
) -> FetchResult:
    """Fetch ``url``; retry connection errors, timeouts and 5xx with exponential backoff (never a refusal)."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
               "Accept": "application/rss+xml, application/atom+xml, application/xml, text/xml;q=0.9, */*;q=0.5"}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    attempts = itertools.count(1)  # FetchResult.attempts says which try answered

    def log_retry(attempt: Retry) -> None:
        logger.warning("fetch failed url=%s attempt=%d error=%s retry_in=%.1fs", url, attempt.attempt, attempt.error, attempt.delay)

    backoff = Backoff(base=backoff_seconds, cap=math.inf, attempts=retries)  # no cap: the attempts bound the waits
    return await retry(lambda: _fetch_once(url, policy, headers, timeout_seconds, max_bytes, next(attempts)), backoff,
                       retryable=worth_retrying, on_retry=log_retry)


def worth_retrying(exc: Exception) -> bool:
    """A connection error, a timeout or a 5xx may pass; a refusal, a 4xx or an oversized feed would not change."""
    if isinstance(exc, RefusedError) or not isinstance(exc, FetchError):
        return False
    return (exc.http_status is None or exc.http_status >= 500) and "larger than" not in str(exc)


async def _fetch_once(
    url: str, policy: EgressPolicy, headers: dict[str, str], timeout_seconds: float, max_bytes: int, attempt: int
) -> FetchResult:
    """One attempt, redirects included, within one deadline (a server dribbling bytes ends with it)."""
    try:
        current = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError("invalid URL", 0) from exc
    resolver = PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=4)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout_seconds))
    try:
        async with asyncio.timeout(timeout_seconds), aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, trust_env=False
        ) as session:
            for _hop in range(MAX_REDIRECTS + 1):
                if current.raw_host is not None and current.port is not None:
                    resolver.pin(current.raw_host, current.port, await check_destination(current, policy))
                else:
                    raise RefusedError
                async with session.get(current, headers=headers, allow_redirects=False) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        try:
                            current = response.url.join(URL(location))
                        except (ValueError, TypeError) as exc:
                            raise FetchError("invalid redirect location") from exc
                        continue
                    return await _read(response, max_bytes, attempt)
            raise FetchError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError as exc:
        raise FetchError(f"timed out after {timeout_seconds:g}s (FETCH_TIMEOUT_SECONDS)") from exc
    except aiohttp.ClientResponseError as exc:
        raise FetchError(f"HTTP error: {exc.message}", exc.status) from exc
    except aiohttp.InvalidURL as exc:
        raise FetchError("invalid URL", 0) from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"connection error: {exc}") from exc


async def _read(response: aiohttp.ClientResponse, max_bytes: int, attempt: int) -> FetchResult:
    if response.status == 304:
        return FetchResult(304, b"", _validators(response), attempt)
    if response.status >= 400:
        # The reason phrase is the server's text: no control characters into logs and import_logs.
        raise FetchError(f"HTTP {response.status} {printable(response.reason or '', 100)}".strip(), response.status)
    declared = response.content_length
    if declared is not None and declared > max_bytes and "gzip" not in response.headers.get("Content-Encoding", ""):
        raise FetchError(f"feed larger than MAX_FEED_BYTES ({declared} > {max_bytes} bytes)", response.status)
    # One growing buffer, returned as it is: joining chunks (or bytes(buffer)) would hold the feed
    # twice at the peak, 1 GB for a 500 MB feed.
    body = bytearray()
    async for chunk in response.content.iter_chunked(256 * 1024):
        if len(body) + len(chunk) > max_bytes:
            raise FetchError(f"feed larger than MAX_FEED_BYTES ({max_bytes} bytes), stopped reading", response.status)
        body += chunk
    return FetchResult(response.status, body, _validators(response), attempt)


def _validators(response: aiohttp.ClientResponse) -> Validators:
    return Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
