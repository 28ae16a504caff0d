"""In-memory state of two request limits: the per-client request rate, and runs requested but not visible yet.

Both are per API process, bounded in size, and driven by an injectable clock so they are tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping


class TokenBuckets:
    """A token bucket per client: ``burst`` requests at once, refilled at ``rate`` per second.

    A client is any key: an address, or the API token its holders share. A request may be charged to
    several keys at once (``take(address, "token")``): it passes only if every one of them has a token.

    At most ``max_clients`` buckets are kept; the least recently used goes first (it is then full again,
    the worst being a client's burst granted twice), so many source addresses cannot exhaust memory.
    """

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a token bucket needs burst >= 1 and rate > 0")
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)

    def take(self, *clients: str) -> float:
        """0.0 when every client may go ahead (each spends a token); else the seconds until all may (none spends).

        Nothing is spent on a refusal: a client held back by another key's bucket keeps its own budget.
        """
        now = self.clock()
        levels: dict[str, float] = {}
        for client in dict.fromkeys(clients):
            tokens, counted = self._buckets.pop(client, (float(self.burst), now))
            levels[client] = min(float(self.burst), tokens + (now - counted) * self.rate)
        wait = max(((1 - tokens) / self.rate for tokens in levels.values() if tokens < 1), default=0.0)
        for client, tokens in levels.items():
            # re-inserted: the dict's order is least recently used first
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]
        return wait


class RunClaims:
    """Feeds this process requested a run of that ``import_logs`` does not show yet.

    ``Store.active_sources`` sees a run once the stats agent has projected its ``requested`` event,
    a moment (or, with no worker up, much longer) after the request. Until then this memory stops a
    second click, or a second concurrent request, from queueing the same feed again. A claim ends when
    its run is seen in ``import_logs`` (from then on ``active_sources`` knows), when the request fails,
    or after ``ttl`` seconds (RUN_TIMEOUT_SECONDS: by then a run is finalised anyway).
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, max_claims: int = 10_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_claims = max_claims
        self._claims: dict[str, tuple[float, str | None]] = {}  # url -> (claimed at, runId once sent)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl
        while self._claims:
            url, (since, _) = next(iter(self._claims.items()))
            if since >= cutoff and len(self._claims) <= self.max_claims:
                break
            del self._claims[url]

    def run_ids(self, urls: Iterable[str]) -> dict[str, str]:
        """The runIds claimed for these feeds, to look up in ``import_logs``."""
        self._expire()
        return {url: run_id for url in urls if (claim := self._claims.get(url)) and (run_id := claim[1])}

    def seen(self, runs: Mapping[str, str]) -> None:
        """These runs (runId by feed URL) are in ``import_logs``: their claims end, unless claimed again since."""
        for url, run_id in runs.items():
            claim = self._claims.get(url)
            if claim is not None and claim[1] == run_id:
                del self._claims[url]

    def claimed(self, urls: Iterable[str]) -> set[str]:
        self._expire()
        return {url for url in urls if url in self._claims}

    def claim(self, urls: Iterable[str]) -> None:
        """Mark feeds as requested, before the first await of the request: no other request slips in between."""
        now = self.clock()
        for url in urls:
            self._claims.pop(url, None)
            self._claims[url] = (now, None)
        self._expire()

    def sent(self, runs: Mapping[str, str]) -> None:
        """The runIds of the commands sent, by feed URL."""
        for url, run_id in runs.items():
            if url in self._claims:
                self._claims[url] = (self._claims[url][0], run_id)

    def release(self, urls: Iterable[str]) -> None:
        """The request failed: these feeds were not (or not surely) requested."""
        for url in urls:
            self._claims.pop(url, None)
