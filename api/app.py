"""The aiohttp application: ``create_app`` builds it (tests use the same factory), ``run_api`` serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pymongo
from aiohttp import web
from aiohttp.typedefs import Handler
from pymongo.errors import ConnectionFailure, PyMongoError

from api.context import (
    FEED_ADDS,
    FOLLOWER_READY,
    HUB,
    KAFKA,
    LAST_RUNS,
    METRICS,
    OPTIONS,
    PARSERS,
    PREVIEW_SLOTS,
    RATE_LIMITS,
    READ_LIMITS,
    RUN_CLAIMS,
    SETTINGS,
    SSE_SLOTS,
    STATIC_FILES,
    STORE,
    STREAMS,
    TOKEN_HOLDER,
    ApiOptions,
)
from api.events import LogHub, StreamSlots
from api.guards import (
    MAX_BODY_BYTES,
    MUTATING,
    SESSION_PATH,
    body_middleware,
    credential,
    exposure_problem,
    host_middleware,
    is_loopback,
    origin_middleware,
    rate_limit_middleware,
    read_needs_token,
)
from api.handlers import json_response, routes, static_files
from api.kafka import KafkaLink, follow_import_logs
from api.lastruns import LastRuns
from api.limits import RunClaims, TokenBuckets
from api.metrics import ApiMetrics
from api.preview import preview_pool
from api.queries import ApiError
from models.registry import RegistryError, parse_feeds_file
from streams.replication import Shortfall, publish
from streams.settings import Settings, SettingsError
from streams.store import Store, until_reachable

logger = logging.getLogger(__name__)

STREAM_ROUTE = "/api/import-logs/stream"
# The request line may carry every query parameter at its documented maximum length, percent-encoded
# (up to 12 bytes a character): ~37 KB for /api/jobs. aiohttp's default, 8190, answered such a
# request in plain text before the API saw it.
MAX_REQUEST_LINE = 64 * 1024
PREVIEW_SLOTS_AT_ONCE = 2  # previews past this many get a 503: each holds a fetched feed in memory


def create_app(settings: Settings, options: ApiOptions | None = None) -> web.Application:
    """The application; SettingsError when the settings would expose it unguarded (see ``exposure_problem``)."""
    problem = exposure_problem(settings)
    if problem is not None:
        raise SettingsError(problem)
    options = options or ApiOptions()
    # Outermost first. Requests another site may send are refused before anything is read or counted
    # against the client's rate; the rate limit comes before auth, so it also bounds token guessing.
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, host_middleware, origin_middleware, rate_limit_middleware,
                     auth_middleware, body_middleware, store_deadline_middleware],
        client_max_size=MAX_BODY_BYTES, handler_args={"max_line_size": MAX_REQUEST_LINE})
    metrics = ApiMetrics(process_metrics=options.process_metrics)
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[METRICS] = metrics
    app[RATE_LIMITS] = TokenBuckets(options.rate_limit_burst, options.rate_limit_per_second)
    app[READ_LIMITS] = TokenBuckets(options.read_rate_limit_burst, options.read_rate_limit_per_second)
    app[SSE_SLOTS] = StreamSlots(settings.max_sse_clients)
    app[FEED_ADDS] = asyncio.Lock()
    app[LAST_RUNS] = LastRuns()
    app[RUN_CLAIMS] = RunClaims(settings.run_timeout_seconds)
    app[PARSERS] = preview_pool(settings)  # no process starts before the first preview
    app[PREVIEW_SLOTS] = asyncio.Semaphore(PREVIEW_SLOTS_AT_ONCE)
    app[HUB] = LogHub(options.sse_ring_size, options.sse_queue_size, on_dropped=metrics.sse_dropped.inc)
    app[STREAMS] = weakref.WeakSet()
    app[FOLLOWER_READY] = asyncio.Event()
    app[STATIC_FILES] = static_files(options.static_dir)
    app.add_routes(routes)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(kafka_ctx)
    app.cleanup_ctx.append(follower_ctx)
    app.on_shutdown.append(close_streams)
    app.on_cleanup.append(close_parsers)
    return app


def run_api(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; open SSE streams are closed first so shutdown does not wait on them."""
    url = f"http://{settings.api_host}:{settings.api_port}/"
    try:
        app = create_app(settings)
    except SettingsError as exc:  # printed to stderr, exit status 1: no traceback for a configuration mistake
        raise SystemExit(f"jobstream api: {exc}") from None
    auth = ("token for reads and changes" if settings.api_reads_require_token else "token for changes") \
        if settings.api_token else "none"
    logger.info("api starting kafka=%s mongo=%s db=%s auth=%s", settings.kafka_bootstrap_servers,
                settings.mongo_url_redacted, settings.mongo_db, auth)
    if not is_loopback(settings.api_host) and not settings.allowed_hosts:
        logger.warning("API_HOST=%s and API_ALLOWED_HOSTS is empty: only requests naming a loopback host or an IP "
                       "address in their Host header are served (421 otherwise); list the names clients use",
                       settings.api_host)
    web.run_app(app, host=settings.api_host, port=settings.api_port, shutdown_timeout=10.0,
                access_log=logging.getLogger("api.access"), print=lambda *_: logger.info("API ready on %s", url))


# --- resources ---------------------------------------------------------------------------------


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = Store(app[SETTINGS])
    app[STORE] = store
    prepare = asyncio.create_task(_prepare_store(app[SETTINGS], store, app[OPTIONS].seed_feeds))
    yield
    await _cancel(prepare)
    await store.close()


async def _prepare_store(settings: Settings, store: Store, seed: bool) -> None:
    """Indexes and the FEEDS_FILE seed, retried in the background: reads work while MongoDB comes up."""

    async def prepare() -> None:
        await store.ensure_indexes()
        if seed:
            await _seed_feeds(settings, store)

    await until_reachable(prepare, "indexes/seed", errors=(PyMongoError,))


async def _seed_feeds(settings: Settings, store: Store) -> None:
    if not settings.feeds_file.exists():
        return
    try:
        entries = parse_feeds_file(settings.feeds_file.read_text(encoding="utf-8"))
    except (RegistryError, OSError) as exc:
        logger.error("FEEDS_FILE %s ignored: %s", settings.feeds_file, exc)
        return
    added = await store.seed_feeds(entries, datetime.now(UTC))
    if added:
        logger.info("feed registry seeded from %s: %d new", settings.feeds_file, added)


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]

    def gauges(topics: list[str], found: list[Shortfall]) -> None:
        publish(topics, found, metrics.topics_under_replicated, metrics.topic_under_replicated)

    link = KafkaLink(app[SETTINGS], on_audit=gauges)
    app[KAFKA] = link
    connect = asyncio.create_task(link.connect())
    yield
    await _cancel(connect)
    await link.close()


async def follower_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start following import.logs; serve once it is positioned (or after a bounded wait), so early events are not lost."""
    ready = app[FOLLOWER_READY]
    metrics = app[METRICS]
    task = asyncio.create_task(follow_import_logs(app[SETTINGS], app[HUB], ready, metrics.sse_events.inc))
    try:
        await asyncio.wait_for(ready.wait(), app[OPTIONS].follower_ready_seconds)
    except TimeoutError:
        logger.warning("import.logs follower not ready after %.0fs; serving anyway, it keeps retrying",
                       app[OPTIONS].follower_ready_seconds)
    yield
    await _cancel(task)


async def close_parsers(app: web.Application) -> None:
    """The preview parse processes die with the API."""
    await app[PARSERS].close()


async def close_streams(app: web.Application) -> None:
    open_streams = app[STREAMS]
    streams = list(open_streams)
    for stream in streams:
        with contextlib.suppress(RuntimeError):
            stream.stop_streaming()
    if streams:
        logger.info("closed %d SSE stream(s) for shutdown", len(streams))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- middlewares -------------------------------------------------------------------------------


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count by route template, never by raw path: unknown URLs must not create label values."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.requests.labels(request.method, route, str(status)).inc()
        if route != STREAM_ROUTE:
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": ...}`` with its status; unexpected ones are logged and become 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response({"error": exc.message}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return json_response({"error": _http_error_text(exc)}, status=exc.status, headers=headers)
    except PyMongoError as exc:
        if not (exc.timeout or isinstance(exc, ConnectionFailure)):
            logger.exception("store error in %s %s", request.method, request.path)
            return json_response({"error": "internal server error"}, status=500)
        # The details (host, topology) stay in the log: clients learn only that the store did not answer.
        logger.warning("store unavailable during %s %s: %s", request.method, request.path, exc)
        return json_response({"error": "store unavailable"}, status=503)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"error": "internal server error"}, status=500)


def _http_error_text(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "not found"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    return exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason


@web.middleware
async def store_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One deadline (API_STORE_TIMEOUT_SECONDS) for all the MongoDB calls of a request, so a hung store costs
    a 503 instead of a request that never ends. pymongo's client-side timeout covers server selection, connection
    checkout and the reply, and reaches tasks the handler starts (a context variable). The SSE stream makes no
    store call and lives for hours: it is left out.
    """
    if request.path == STREAM_ROUTE:
        return await handler(request)
    with pymongo.timeout(request.app[SETTINGS].api_store_timeout_seconds):
        return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With API_TOKEN set, changes need ``Authorization: Bearer <token>`` (constant-time compare); with
    API_READS_REQUIRE_TOKEN also reads of the API's data, by the bearer token or the session cookie.

    The cookie is for reads only (EventSource cannot send a header): a change always needs the header,
    which no other site's page can make a browser send. ``/api/session`` is where the cookie is made.
    """
    settings = request.app[SETTINGS]
    if settings.api_token and request.path != SESSION_PATH:
        held = credential(request)
        if request.method in MUTATING:
            if held != "bearer":
                raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)",
                               {"WWW-Authenticate": 'Bearer realm="jobstream"'})
            request[TOKEN_HOLDER] = True
        elif settings.api_reads_require_token and read_needs_token(request.path) and not held:
            raise ApiError(401, "reading this API needs its token: Authorization: Bearer <API_TOKEN>, or the "
                                "session cookie of POST /api/session (the dashboard's Token button)",
                           {"WWW-Authenticate": 'Bearer realm="jobstream"'})
    return await handler(request)
