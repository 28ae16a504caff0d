"""What the handlers find on the application: typed keys and the API's own tuning options."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from agents.parsing import ParserPool
from api.events import LogHub, StreamSlots
from api.kafka import KafkaLink
from api.lastruns import LastRuns
from api.limits import RunClaims, TokenBuckets
from api.metrics import ApiMetrics
from streams.settings import Settings
from streams.store import Store

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """Knobs that only the API has and tests need to turn (the SPEC's settings live in Settings)."""

    sse_ping_seconds: float = 15.0
    sse_retry_ms: int = 2000
    sse_ring_size: int = 1000
    sse_queue_size: int = 256
    health_timeout_seconds: float = 3.0
    kafka_wait_seconds: float = 5.0  # how long a run request waits for a producer that is (re)connecting
    follower_ready_seconds: float = 20.0  # start-up waits this long for the import.logs follower
    seed_feeds: bool = True
    process_metrics: bool = True
    static_dir: Path = field(default=STATIC_DIR)
    # Changes (POST/PATCH/DELETE) per client address: a burst of this many, then this many per second.
    # A person at the dashboard stays far below; a script gets 429 with Retry-After and should wait.
    rate_limit_burst: int = 30
    rate_limit_per_second: float = 1.0
    # Reads (GET, the dashboard's files and the SSE stream included; not /health or /metrics) per client
    # address, and per API token for requests that carry it: a page load is about 15 reads.
    read_rate_limit_burst: int = 120
    read_rate_limit_per_second: float = 20.0
    # How long the session cookie of POST /api/session lets a browser read (API_READS_REQUIRE_TOKEN).
    session_seconds: int = 12 * 3600


SETTINGS = web.AppKey("settings", Settings)
OPTIONS = web.AppKey("options", ApiOptions)
STORE = web.AppKey("store", Store)
KAFKA = web.AppKey("kafka", KafkaLink)
HUB = web.AppKey("hub", LogHub)
METRICS = web.AppKey("metrics", ApiMetrics)
STREAMS = web.AppKey("streams", weakref.WeakSet[EventSourceResponse])
FOLLOWER_READY = web.AppKey("follower_ready", asyncio.Event)
STATIC_FILES = web.AppKey("static_files", dict[str, Path])
RATE_LIMITS = web.AppKey("rate_limits", TokenBuckets)
READ_LIMITS = web.AppKey("read_limits", TokenBuckets)
SSE_SLOTS = web.AppKey("sse_slots", StreamSlots)
# Held from the registry's count to the insert, so concurrent adds in this process cannot pass MAX_FEEDS.
FEED_ADDS = web.AppKey("feed_adds", asyncio.Lock)
LAST_RUNS = web.AppKey("last_runs", LastRuns)
RUN_CLAIMS = web.AppKey("run_claims", RunClaims)
# The API's parse processes (previews only) and the previews that may run at once.
PARSERS = web.AppKey("parsers", ParserPool)
PREVIEW_SLOTS = web.AppKey("preview_slots", asyncio.Semaphore)
# Set by the auth middleware when the request carried the right API_TOKEN.
TOKEN_HOLDER = web.RequestKey("token_holder", bool)
# Which proof of API_TOKEN the request carries ("bearer", "session", or "" for none): see api.guards.credential.
CREDENTIAL = web.RequestKey("credential", str)
