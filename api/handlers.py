"""The HTTP handlers of SPEC §5: parse with ``api.queries``, do one store or Kafka call, answer JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import pymongo
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from agents.parsing import PoolClosed
from api import models, queries
from api.context import (
    FEED_ADDS,
    HUB,
    KAFKA,
    LAST_RUNS,
    METRICS,
    OPTIONS,
    PARSERS,
    PREVIEW_SLOTS,
    RUN_CLAIMS,
    SETTINGS,
    SSE_SLOTS,
    STATIC_FILES,
    STORE,
    STREAMS,
    TOKEN_HOLDER,
)
from api.events import LogEvent, LogHub, Replay
from api.guards import SESSION_COOKIE, SESSION_PATH, session_value, token_matches
from api.openapi import openapi_document
from api.preview import PreviewFailed, preview_feed
from api.queries import ApiError, Document, feed_json, to_json
from models.formats import DEFAULT_FORMAT
from models.replay import missing_payload_reason, replayed_run
from streams.commands import request_replay, request_runs

logger = logging.getLogger(__name__)
routes = web.RouteTableDef()

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The dashboard loads nothing from elsewhere and runs no inline code: feed content can never become script.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                 "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOG_LIST_PROJECTION = {"_id": 0, "failures": 0}
JOB_LIST_PROJECTION = {"description": 0}  # _id (= dedupeKey) is the sort's tie-break; to_json drops it
SEARCH_PROJECTION = {"_id": 1, "publishedAt": 1}
SSE_RETRY_AFTER_SECONDS = "10"
PREVIEW_RETRY_AFTER_SECONDS = "5"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(to_json(data), status=status, headers=headers,
                             dumps=partial(json.dumps, separators=(",", ":"), default=str))


async def json_body(request: web.Request) -> Any:
    """The parsed body; None when empty; 400 when it is not JSON (``body_middleware`` checked type and size)."""
    if not request.body_exists:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # thousands of nested [ or { within the size limit
        raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError:  # e.g. an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ApiError(400, "request body is not valid JSON: a number is too long") from None


# --- health, metrics, documents ------------------------------------------------------------------


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    timeout = request.app[OPTIONS].health_timeout_seconds
    store_timeout = min(timeout, request.app[SETTINGS].api_store_timeout_seconds)
    kafka, mongo, (workers, consuming) = await asyncio.gather(
        request.app[KAFKA].check(timeout), _mongo_check(request, store_timeout), request.app[KAFKA].workers_check(timeout))
    # "degraded" (topics below the replication settings, SPEC §4): the pipeline works, with less safety than
    # configured: 200, named in the kafka part and in the status.
    degraded = kafka.startswith("degraded")
    healthy = (kafka == "ok" or degraded) and mongo == "ok" and consuming
    answer: models.Health = {"status": "error" if not healthy else "degraded" if degraded else "ok", "kafka": kafka,
                             "mongo": mongo, "workers": workers}
    return json_response(answer, status=200 if healthy else 503)


async def _mongo_check(request: web.Request, timeout: float) -> str:
    """``ok`` or why not, naming no host and no exception text (details go to the log only)."""
    try:
        with pymongo.timeout(timeout):  # nested in the request's store deadline (the shorter wins): at most that
            await request.app[STORE].ping()
    except PyMongoError as exc:
        logger.warning("health: MongoDB ping failed: %s", exc)
        if exc.timeout:
            return f"error: no answer within {timeout:g}s"
        if isinstance(exc, ConnectionFailure):
            return "error: unreachable"
        return "error: ping refused"
    return "ok"


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    return await request.app[METRICS].handler(request)


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    return _static(request, "index.html")


@routes.get("/static/{path:.+}")
async def static_file(request: web.Request) -> web.FileResponse:
    """Only files found in api/static at start-up are served: no path from the URL reaches the filesystem."""
    return _static(request, request.match_info["path"])


def _static(request: web.Request, name: str) -> web.FileResponse:
    path = request.app[STATIC_FILES].get(name)
    if path is None:
        raise ApiError(404, f"no static file {name!r}")
    headers = {"Content-Type": STATIC_TYPES[path.suffix], "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = DASHBOARD_CSP
        headers["Referrer-Policy"] = "no-referrer"
    return web.FileResponse(path, headers=headers)


def static_files(directory: Path) -> dict[str, Path]:
    """The dashboard's files by URL path below /static/."""
    return {path.relative_to(directory).as_posix(): path for path in sorted(directory.rglob("*"))
            if path.is_file() and path.suffix in STATIC_TYPES}


# --- the browser's session (reads with API_READS_REQUIRE_TOKEN) ----------------------------------


@routes.post(SESSION_PATH)
async def open_session(request: web.Request) -> web.Response:
    """``{"token"}`` → 204 and an HttpOnly, SameSite=Strict cookie that lets this browser read, EventSource included.

    No bearer header needed (this is where a browser proves it has the token); the rate limit on changes
    per address bounds guessing, and the origin guard keeps other sites' pages out.
    """
    token = request.app[SETTINGS].api_token
    if not token:
        raise ApiError(404, "this API has no API_TOKEN: reads and changes need no session")
    try:
        offered = models.validated(models.SessionRequest, await json_body(request)).token
    except ApiError:
        raise ApiError(400, 'body must be {"token": "<API_TOKEN>"}') from None
    if not token_matches(offered, token):
        raise ApiError(401, "wrong token", {"WWW-Authenticate": 'Bearer realm="jobstream"'})
    seconds = request.app[OPTIONS].session_seconds
    response = web.Response(status=204)
    response.set_cookie(SESSION_COOKIE, session_value(token, int(time.time()) + seconds), max_age=seconds, path="/",
                        httponly=True, samesite="Strict", secure=request.secure)
    logger.info("session opened from %s for %d s", request.remote, seconds)
    return response


@routes.delete(SESSION_PATH)
async def close_session(request: web.Request) -> web.Response:
    """Forget this browser's session cookie (logging out needs no token)."""
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.secure)
    return response


# --- import runs ---------------------------------------------------------------------------------


@routes.post("/api/import/run")
async def run_import(request: web.Request) -> web.Response:
    """Runs of the given (or every enabled) feed; a feed already pending or running is skipped, not queued twice."""
    body = await json_body(request)
    urls = None if body is None else models.validated(models.RunRequest, body).urls()
    store, claims = request.app[STORE], request.app[RUN_CLAIMS]
    if urls is None:
        feeds = await store.enabled_feeds()
        urls = [str(feed["url"]) for feed in feeds]
    else:
        feeds = [doc async for doc in store.feeds.find({"url": {"$in": urls}})]
    registry = {str(feed["url"]): feed for feed in feeds}
    queries.require_registered(urls, registry, allowed_unregistered=request.get(TOKEN_HOLDER, False))
    running = await busy_feeds(request, urls)
    # From the claims check to claim() nothing awaits: a concurrent request sees these claims.
    plan = queries.plan_runs(urls, registry, running, claims.claimed(urls))
    started = [entry.url for entry in plan.entries]
    claims.claim(started)
    try:
        commands = []
        if plan.entries:
            send = await request.app[KAFKA].sender(request.app[OPTIONS].kafka_wait_seconds)
            commands = await request_runs(send, request.app[SETTINGS], plan.entries, "manual")
    except BaseException:
        claims.release(started)
        raise
    claims.sent({c["sourceUrl"]: c["runId"] for c in commands})
    request.app[METRICS].runs_requested.inc(len(commands))
    logger.info("runs requested over the API count=%d skipped=%d urls=%s", len(commands), len(plan.skipped),
                ",".join(started))
    answer: models.RunsRequested = {"runs": [{"runId": c["runId"], "sourceUrl": c["sourceUrl"]} for c in commands],
                                    "skipped": cast(list[models.SkippedRun], plan.skipped)}
    return json_response(answer, status=202)


async def busy_feeds(request: web.Request, urls: list[str]) -> set[str]:
    """Feeds with a run pending or running in import_logs; the claims of runs import_logs shows now end.

    The caller checks ``claims.claimed`` and claims without awaiting in between.
    """
    store, claims = request.app[STORE], request.app[RUN_CLAIMS]
    running = await store.active_sources()
    if claimed := claims.run_ids(urls):  # runs requested here before: those import_logs shows are no longer claims
        cursor = store.import_logs.find({"runId": {"$in": list(claimed.values())}}, {"_id": 0, "runId": 1})
        visible = {doc["runId"] async for doc in cursor}
        claims.seen({url: run_id for url, run_id in claimed.items() if run_id in visible})
    return running


@routes.post("/api/import/replay")
async def replay_import(request: web.Request) -> web.Response:
    """A new run (trigger ``replay``) that parses a stored payload instead of fetching: after a parser or mapping fix.

    409 when the payload is gone (expired, never stored) or a run of the feed is pending or running (a
    replay is refused like a second manual run, not queued). Replaying an older payload never rolls a
    posting back: the dedupe agent leaves a posting whose stored version came from a newer payload as it
    is (``models/dedupe.py``).
    """
    wanted = models.validated(models.ReplayRequest, await json_body(request))
    store, claims, settings = request.app[STORE], request.app[RUN_CLAIMS], request.app[SETTINGS]
    if wanted.runId is not None:
        run = await store.import_logs.find_one({"runId": wanted.runId}, {"_id": 0, "failures": 0})
        if run is None:
            raise ApiError(404, f"no import run {wanted.runId!r}")
        url, replay_of = str(run["sourceUrl"]), replayed_run(run)
        stored = await store.raw_feeds.find_one({"_id": replay_of}, {"_id": 1})
        if stored is None:
            raise ApiError(409, missing_payload_reason(run, datetime.now(UTC), settings.raw_feed_retention_days))
    else:
        url = str(wanted.feed)
        latest = await store.raw_feeds.find_one({"sourceUrl": url}, {"_id": 1, "runId": 1},
                                                sort=[("fetchedAt", DESCENDING)])
        if latest is None:
            raise ApiError(409, f"no stored payload of feed {url!r}: raw_feeds keeps payloads "
                                f"RAW_FEED_RETENTION_DAYS={settings.raw_feed_retention_days:g} days, and none too large to keep")
        replay_of = str(latest["runId"])
    registered = await store.feeds.find_one({"url": url})
    queries.require_registered([url], {url: registered} if registered else {},
                               allowed_unregistered=request.get(TOKEN_HOLDER, False))
    running = await busy_feeds(request, [url])
    if url in running or claims.claimed([url]):  # nothing awaits from here to claim()
        raise ApiError(409, f"a run of {url} is pending or running: replay it once that run has finished")
    claims.claim([url])
    try:
        send = await request.app[KAFKA].sender(request.app[OPTIONS].kafka_wait_seconds)
        command = await request_replay(send, settings, queries.run_entry(url, registered), replay_of)
    except BaseException:
        claims.release([url])
        raise
    claims.sent({url: command["runId"]})
    request.app[METRICS].runs_requested.inc()
    logger.info("replay requested run_id=%s replay_of=%s url=%s", command["runId"], replay_of, url)
    answer: models.ReplayRequested = {"runs": [{"runId": command["runId"], "sourceUrl": url, "replayOf": replay_of}]}
    return json_response(answer, status=202)


@routes.post("/api/feeds/preview")
async def preview(request: web.Request) -> web.Response:
    """The first postings of a feed as a run would read them, and its failures; writes nothing (``api.preview``).

    Format and mapping: those given, else the registered feed's. 422 when the feed cannot be fetched or read.
    """
    wanted = models.validated(models.PreviewRequest, await json_body(request))
    registered = await request.app[STORE].feeds.find_one({"url": wanted.url}, {"_id": 0, "name": 1, "format": 1,
                                                                               "mapping": 1})
    format_ = wanted.format or (registered or {}).get("format") or DEFAULT_FORMAT
    mapping = wanted.stored_mapping() if wanted.given else (registered or {}).get("mapping")
    name = str((registered or {}).get("name") or queries.run_entry(wanted.url, None).name)
    slots = request.app[PREVIEW_SLOTS]
    if slots.locked():
        raise ApiError(503, "previews are busy: retry in a moment", {"Retry-After": PREVIEW_RETRY_AFTER_SECONDS})
    async with slots:
        try:
            body = await preview_feed(request.app[SETTINGS], request.app[PARSERS], wanted.url, name, format_=format_,
                                      mapping=mapping)
        except PreviewFailed as exc:
            raise ApiError(422, str(exc)) from None
        except PoolClosed:
            raise ApiError(503, "the API is stopping: retry in a moment", {"Retry-After": PREVIEW_RETRY_AFTER_SECONDS}) from None
    return json_response(body)


@routes.get("/api/import-logs")
async def list_import_logs(request: web.Request) -> web.Response:
    query = models.ImportLogsQuery.of(request.query)
    page, conditions = query.paging, query.conditions()
    logs = request.app[STORE].import_logs
    (items, after), (total, exact) = await asyncio.gather(
        keyset_page(logs, conditions, queries.RUNS_ORDER, page, LOG_LIST_PROJECTION), page_total(logs, conditions, page))
    answer: models.ImportLogPage = {"items": cast(list[models.ImportLog], items), "page": page.page, "limit": page.limit,
                                    "total": total, "totalExact": exact, "next": after}
    return json_response(answer)


@routes.get("/api/import-logs/stream")
async def stream_import_logs(request: web.Request) -> web.StreamResponse:
    """Live snapshots; see ``api.events`` for ids, resume and the per-client bound. 503 past MAX_SSE_CLIENTS."""
    slots = request.app[SSE_SLOTS]
    if not slots.acquire():
        raise ApiError(503, f"too many live streams are open (MAX_SSE_CLIENTS={slots.limit}): retry later",
                       {"Retry-After": SSE_RETRY_AFTER_SECONDS})
    try:
        return await _stream(request)
    finally:
        slots.release()


async def _stream(request: web.Request) -> web.StreamResponse:
    hub, options, streams, gauge = request.app[HUB], request.app[OPTIONS], request.app[STREAMS], request.app[METRICS].sse_clients
    async with sse_response(request, ping_interval=options.sse_ping_seconds) as stream:
        subscription, replay = hub.subscribe(stream.last_event_id, on_drop=stream.stop_streaming)
        streams.add(stream)
        gauge.inc()
        pump = asyncio.create_task(_pump(stream, hub, subscription.queue, replay, options.sse_retry_ms))
        try:
            await stream.wait()  # until the client leaves, is dropped, or the server shuts down
        finally:
            hub.unsubscribe(subscription)
            gauge.dec()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return stream


async def _pump(stream: EventSourceResponse, hub: LogHub, queue: asyncio.Queue[LogEvent], replay: Replay,
                retry_ms: int) -> None:
    """Write the replay, then live events, until a write fails; then end the stream."""
    try:
        # The first bytes flush the headers at once, so EventSource reports "open" without waiting for a ping.
        await stream.write(f"retry: {retry_ms}\n\n".encode())
        if replay.resync:
            await stream.send(json.dumps({"lastEventId": hub.last_id}), id=hub.last_id, event="resync")
        for event in replay.events:
            await stream.send(event.data, id=event.id, event="import-log")
        while True:
            event = await queue.get()
            await stream.send(event.data, id=event.id, event="import-log")
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        logger.debug("SSE client gone: %s", exc)
    finally:
        stream.stop_streaming()


async def one_or_404(collection: Any, field: str, value: str, what: str) -> web.Response:
    """The document whose ``field`` is ``value`` (``_id`` is the same value, hidden), else a 404 JSON."""
    doc = await collection.find_one({field: value}, {"_id": 0})
    if doc is None:
        raise ApiError(404, f"no {what} {value!r}")
    return json_response(doc)


@routes.get("/api/import-logs/{runId}")
async def get_import_log(request: web.Request) -> web.Response:
    return await one_or_404(request.app[STORE].import_logs, "runId", request.match_info["runId"], "import run")


# --- jobs ----------------------------------------------------------------------------------------


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """A page of ``job_search`` (small documents, an index per filter in list order), then those jobs by ``_id``."""
    query = models.JobsQuery.of(request.query)
    page, conditions = query.paging, query.conditions()
    store = request.app[STORE]
    (rows, after), (total, exact) = await asyncio.gather(
        keyset_page(store.job_search, conditions, queries.JOBS_ORDER, page, SEARCH_PROJECTION),
        page_total(store.job_search, conditions, page))
    items = await jobs_by_key(store.jobs, [row["_id"] for row in rows])
    answer: models.JobPage = {"items": cast(list[models.Job], items), "page": page.page, "limit": page.limit,
                              "total": total, "totalExact": exact, "next": after}
    return json_response(answer)


async def jobs_by_key(jobs: AsyncCollection[Document], keys: list[str]) -> list[Document]:
    """The jobs of ``keys`` in that order; a key whose job is gone (deleted since) is left out."""
    if not keys:
        return []
    found = {doc["_id"]: doc async for doc in jobs.find({"_id": {"$in": keys}}, JOB_LIST_PROJECTION)}
    return [found[key] for key in keys if key in found]


async def keyset_page(collection: AsyncCollection[Document], conditions: Document, order: queries.Order, page: queries.Page,
                      projection: Document) -> tuple[list[Document], str | None]:
    """One page in ``order`` and the next page's cursor; one row more than the page is read to know if there is one."""
    wanted = page.limit + 1
    rows: list[Document] = []
    for part in queries.keyset_filters(conditions, order, page.after):
        cursor = collection.find(part, projection, sort=order.sort, skip=page.skip, limit=wanted - len(rows))
        rows += [doc async for doc in cursor]
        if len(rows) >= wanted:
            break
    return queries.cut_page(order, page, rows)


async def page_total(collection: AsyncCollection[Document], conditions: Document, page: queries.Page) -> tuple[int | None, bool]:
    """``total`` and ``totalExact``: a filtered count reads every match, so it is made only when asked (total=1).

    Unasked, an unfiltered list reports the collection's estimated count (metadata, no scan), a filtered one null.
    """
    if page.total:  # the count command (not count_documents' aggregation): the store pushes its filter down
        reply = await collection.database.command("count", collection.name, query=conditions)
        return int(reply["n"]), True
    if not conditions:
        return await collection.estimated_document_count(), False
    return None, False


@routes.get("/api/jobs/{dedupeKey}")
async def get_job(request: web.Request) -> web.Response:
    return await one_or_404(request.app[STORE].jobs, "dedupeKey", request.match_info["dedupeKey"], "job")


# --- the feed registry ---------------------------------------------------------------------------


@routes.get("/api/feeds")
async def list_feeds(request: web.Request) -> web.Response:
    """Every registered feed with its latest run, so the dashboard shows which feeds are healthy.

    One find, bounded by MAX_FEEDS (the registry holds no more): the stats agent keeps each feed's
    ``lastRun`` on its document (``models.runs.last_run_update``). Only feeds registered before it did
    (no ``lastRun`` field at all) have theirs read from ``import_logs`` (``api.lastruns``).
    """
    store = request.app[STORE]
    feeds = [doc async for doc in store.feeds.find({}, sort=[("createdAt", ASCENDING), ("url", ASCENDING)],
                                                   limit=request.app[SETTINGS].max_feeds)]
    older = [str(feed["url"]) for feed in feeds if "lastRun" not in feed]
    latest = await request.app[LAST_RUNS].of(store.import_logs, older) if older else {}
    items = [{**feed_json(feed), "lastRun": to_json(feed["lastRun"] if "lastRun" in feed else latest.get(str(feed["url"])))}
             for feed in feeds]
    return json_response({"items": items, "total": len(items)})


@routes.post("/api/feeds")
async def add_feed(request: web.Request) -> web.Response:
    entry = models.validated(models.NewFeed, await json_body(request)).entry()
    now = datetime.now(UTC)
    created = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB keeps: milliseconds
    doc: Document = {"url": entry.url, "name": entry.name, "enabled": entry.enabled, "format": entry.format,
                     "mapping": entry.mapping, "createdAt": created, "lastRun": None}
    feeds, limit = request.app[STORE].feeds, request.app[SETTINGS].max_feeds
    # Count and insert under one lock: concurrent adds to this process cannot both take the last place.
    # (Several API processes could each add one past it: MAX_FEEDS bounds work, it is not an exact quota.)
    async with request.app[FEED_ADDS]:
        if await feeds.count_documents({}) >= limit:
            raise ApiError(409, f"the feed registry is full (MAX_FEEDS={limit}): delete or disable feeds you no longer "
                                "need, or raise MAX_FEEDS")
        try:
            result = await feeds.insert_one(doc)
        except DuplicateKeyError:
            raise ApiError(409, f"feed already registered: {entry.url}") from None
    doc["_id"] = result.inserted_id
    logger.info("feed added url=%s enabled=%s", entry.url, entry.enabled)
    return json_response({**feed_json(doc), "lastRun": None}, status=201,
                         headers={"Location": f"/api/feeds/{result.inserted_id}"})


@routes.patch("/api/feeds/{id}")
async def change_feed(request: web.Request) -> web.Response:
    feed_id = queries.parse_object_id(request.match_info["id"])
    changes = models.validated(models.FeedChange, await json_body(request)).changes()
    feeds = request.app[STORE].feeds
    result = await feeds.update_one({"_id": feed_id}, {"$set": changes})
    if result.matched_count == 0:
        raise ApiError(404, f"no feed with id {feed_id}")
    doc = await feeds.find_one({"_id": feed_id})
    if doc is None:  # deleted between the two calls
        raise ApiError(404, f"no feed with id {feed_id}")
    logger.info("feed changed url=%s %s", doc["url"], " ".join(f"{k}={v}" for k, v in changes.items() if k != "mapping"))
    return json_response(feed_json(doc))


@routes.delete("/api/feeds/{id}")
async def delete_feed(request: web.Request) -> web.Response:
    feed_id = queries.parse_object_id(request.match_info["id"])
    doc = await request.app[STORE].feeds.find_one_and_delete({"_id": feed_id})
    if doc is None:
        raise ApiError(404, f"no feed with id {feed_id}")
    logger.info("feed deleted url=%s", doc["url"])
    return web.Response(status=204)
