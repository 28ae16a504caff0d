"""HTTP fetching of one feed: conditional GET, timeout, size cap while reading, bounded retries."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
RETRIES = 3
BACKOFF_SECONDS = 0.5
USER_AGENT = "jobstream/1.0 (+https://github.com/jobstream/jobstream)"


class FetchError(Exception):
    """The feed could not be fetched; ``str()`` is the message for ``import_logs.error``."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class Validators:
    """What a server told us last time, sent back so an unchanged feed costs a 304."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    http_status: int
    body: bytes
    validators: Validators
    attempts: int

    @property
    def not_modified(self) -> bool:
        return self.http_status == 304


async def fetch_feed(
    session: aiohttp.ClientSession,
    url: str,
    *,
    validators: Validators,
    timeout_seconds: float,
    max_bytes: int,
    retries: int = RETRIES,
    backoff_seconds: float = BACKOFF_SECONDS,
) -> FetchResult:
    """Fetch ``url``; retry connection errors, timeouts and 5xx with exponential backoff."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
               "Accept": "application/rss+xml, application/atom+xml, application/xml, text/xml;q=0.9, */*;q=0.5"}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    last_error: FetchError | None = None
    for attempt in range(1, retries + 1):
        try:
            return await _fetch_once(session, url, headers, timeout_seconds, max_bytes, attempt)
        except FetchError as exc:
            retryable = exc.http_status is None or exc.http_status >= 500
            if not retryable or attempt == retries or "larger than" in str(exc):
                raise
            last_error = exc
        delay = backoff_seconds * 2 ** (attempt - 1)
        logger.warning("fetch failed url=%s attempt=%d error=%s retry_in=%.1fs", url, attempt, last_error, delay)
        await asyncio.sleep(delay)
    raise last_error or FetchError("fetch failed")  # pragma: no cover - the loop returns or raises


async def _fetch_once(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_seconds: float, max_bytes: int, attempt: int
) -> FetchResult:
    timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=min(10.0, timeout_seconds))
    try:
        async with session.get(url, headers=headers, timeout=timeout, max_redirects=MAX_REDIRECTS) as response:
            if response.status == 304:
                return FetchResult(304, b"", _validators(response), attempt)
            if response.status >= 400:
                raise FetchError(f"HTTP {response.status} {response.reason or ''}".strip(), response.status)
            declared = response.content_length
            if declared is not None and declared > max_bytes and "gzip" not in response.headers.get("Content-Encoding", ""):
                raise FetchError(f"feed larger than MAX_FEED_BYTES ({declared} > {max_bytes} bytes)", response.status)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"feed larger than MAX_FEED_BYTES ({max_bytes} bytes), stopped reading", response.status)
                chunks.append(chunk)
            return FetchResult(response.status, b"".join(chunks), _validators(response), attempt)
    except aiohttp.TooManyRedirects as exc:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects") from exc
    except TimeoutError as exc:
        raise FetchError(f"timed out after {timeout_seconds:g}s (FETCH_TIMEOUT_SECONDS)") from exc
    except aiohttp.ClientResponseError as exc:
        raise FetchError(f"HTTP error: {exc.message}", exc.status) from exc
    except aiohttp.InvalidURL as exc:
        raise FetchError(f"invalid URL: {url}", 0) from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"connection error: {exc}") from exc


def _validators(response: aiohttp.ClientResponse) -> Validators:
    return Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
