"""The OpenAPI 3.1 document of the HTTP API: its paths written here, next to the handlers they describe; its
component schemas and list query parameters generated from the models of ``api.models`` (pydantic).

A test compares its paths and methods with the app's routes, so the two cannot drift apart silently.
"""

from __future__ import annotations

import copy
from typing import Any

from api import models
from api.guards import JSON_TYPE, MAX_BODY_BYTES
from api.queries import MAX_RUN_FEEDS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _linked(response: Schema, **links: Schema) -> Schema:
    """A response with OpenAPI links: where its values lead (clients and schemathesis' stateful tests follow them)."""
    return {**response, "links": links}


def _link(operation_id: str, parameter: str, pointer: str) -> Schema:
    return {"operationId": operation_id, "parameters": {parameter: f"$response.body#{pointer}"}}


def _error(description: str, headers: Schema | None = None) -> Schema:
    response = _json(_ref("Error"), description)
    if headers:
        response["headers"] = headers
    return response


def _body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


BAD_REQUEST = _error("invalid parameter or body")
STORE_UNAVAILABLE = _error("MongoDB did not answer within API_STORE_TIMEOUT_SECONDS: `store unavailable`")
UNAUTHORIZED = _error("API_TOKEN is set and the request lacks `Authorization: Bearer <token>`")
READ_UNAUTHORIZED = _error("API_TOKEN and API_READS_REQUIRE_TOKEN are set and the request carries neither "
                           "`Authorization: Bearer <token>` nor a valid session cookie (POST /api/session)")
MISDIRECTED = _error("the Host header names a host this API does not serve: not a loopback name, API_HOST, an entry "
                     "of API_ALLOWED_HOSTS or (beyond loopback) an IP address (DNS rebinding)")
BAD_HOST = _error("the Host header is missing or not a host name")
READS_LIMITED = _error("this client (address, or API token) sent requests faster than its rate limit",
                       {"Retry-After": {"description": "seconds to wait", "required": True,
                                        "schema": {"type": "integer", "minimum": 1}}})
# Reads anyone may make, also with API_READS_REQUIRE_TOKEN (monitoring, this document, the dashboard's files).
OPEN_OPERATIONS = frozenset({"health", "metrics", "openapi", "dashboard", "staticFile", "openSession", "closeSession"})
UNLIMITED_OPERATIONS = frozenset({"health", "metrics"})
CROSS_ORIGIN = "a change sent from another origin (`Origin`, else `Sec-Fetch-Site` or `Referer`, is not this API's own)"
# Every change (POST/PATCH/DELETE) passes the same guards before its handler runs.
GUARDED: dict[str, Schema] = {
    "403": _error(CROSS_ORIGIN),
    "413": _error(f"request body over {MAX_BODY_BYTES} bytes"),
    "415": _error(f"a request body that is not `{JSON_TYPE}`"),
    "429": _error("this client sent changes faster than its rate limit (a burst, then a steady rate per second)",
                  {"Retry-After": {"description": "seconds to wait", "required": True,
                                   "schema": {"type": "integer", "minimum": 1}}}),
}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
READ_SECURED: list[dict[str, list[str]]] = [{}, {"bearer": []}, {"session": []}]  # {}: open unless reads need the token


def openapi_document() -> dict[str, Any]:
    feed_id = _path("id", "the feed's id (24 hex characters)")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "jobstream API",
            "version": "1.0.0",
            "description": (
                "Import history, live import progress (SSE), jobs and the feed registry of jobstream. "
                "Every endpoint that uses MongoDB answers 503 `{\"error\": \"store unavailable\"}` when "
                "the store does not answer within API_STORE_TIMEOUT_SECONDS (default 5). "
                "Changes (POST/PATCH/DELETE) must come from this API's own origin (403 otherwise), carry a "
                f"`{JSON_TYPE}` body if any (415; at most {MAX_BODY_BYTES} bytes, 413), and are rate-limited per "
                "client (429 with Retry-After). Reads are rate-limited too, per address and per API token, "
                "except /health and /metrics. The API answers only requests whose Host names a loopback host, "
                "API_HOST, an entry of API_ALLOWED_HOSTS or, beyond loopback, an IP address (421 otherwise). "
                "With API_READS_REQUIRE_TOKEN, reads under /api/ (but this document and /api/session) need the "
                "bearer token or the session cookie of POST /api/session (401 otherwise)."),
        },
        "components": {
            "schemas": copy.deepcopy(models.components()),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Required for POST/PATCH/DELETE when API_TOKEN is set, and for reads of "
                                          "/api/ too when API_READS_REQUIRE_TOKEN is on"},
                "session": {"type": "apiKey", "in": "cookie", "name": "jobstream_session",
                            "description": "Set by POST /api/session (HttpOnly, SameSite=Strict): lets a browser "
                                           "read, EventSource included, when API_READS_REQUIRE_TOKEN is on. "
                                           "Never enough for a change"},
            },
        },
        "paths": {
            "/": {"get": {"summary": "The live dashboard (HTML)", "operationId": "dashboard",
                          "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}},
            "/static/{path}": {"get": {
                "summary": "The dashboard's scripts, styles and icons", "operationId": "staticFile",
                "parameters": [{**_path("path", "file below api/static"), "example": "js/main.js"}],
                "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
            }},
            "/health": {"get": {
                "summary": "Liveness of Kafka and MongoDB, and whether the workers consume", "operationId": "health",
                "responses": {"200": _json(_ref("Health"), "both reachable, and no run request waits for a worker"),
                              "503": _json(_ref("Health"), "the failing part says `error: ...`")},
            }},
            "/metrics": {"get": {"summary": "Prometheus metrics of the API process", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text exposition",
                                                       "content": {"text/plain": {}}}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                          "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
            "/api/session": {
                "post": {"summary": "Open a read session for this browser (the dashboard's token form)",
                         "operationId": "openSession",
                         "description": (
                             "Takes the API token once and answers with an HttpOnly, SameSite=Strict cookie "
                             "`jobstream_session` that lets this browser read (EventSource included) while "
                             "API_READS_REQUIRE_TOKEN is on. The cookie holds a signed expiry, not the token; "
                             "changing API_TOKEN ends every session. Changes still need the bearer header."),
                         "requestBody": _body(_ref("SessionRequest")),
                         "responses": {"204": {"description": "session opened (Set-Cookie)",
                                               "headers": {"Set-Cookie": {"schema": {"type": "string"}}}},
                                       "400": BAD_REQUEST, "401": _error("wrong token"), **GUARDED,
                                       "404": _error("this API has no API_TOKEN: there is no session to open")}},
                "delete": {"summary": "Close this browser's read session", "operationId": "closeSession",
                           "responses": {"204": {"description": "the cookie is cleared"}, **GUARDED}},
            },
            "/api/import/run": {"post": {
                "summary": "Request import runs now", "operationId": "runImport", "security": SECURED,
                "description": (
                    "Without `feeds`: every enabled feed of the registry. With `feeds`: those URLs (duplicates "
                    f"ignored, at most {MAX_RUN_FEEDS}); they must be registered feeds unless API_TOKEN is set "
                    "(then every caller holds the token). A feed with a run pending or running is not started "
                    "again: it is listed in `skipped` with the reason."),
                "requestBody": _body(_ref("RunRequest"), required=False),
                "responses": {
                    "202": _linked(_json(_ref("RunsRequested"),
                                         "runs requested (possibly none); follow them on /api/import-logs/stream"),
                        GetRequestedRun=_link("getImportLog", "runId", "/runs/0/runId")),
                    "400": BAD_REQUEST, "401": UNAUTHORIZED, **GUARDED,
                    "403": _error(f"{CROSS_ORIGIN}; or unregistered feed URLs without API_TOKEN"),
                    "503": _error("Kafka unavailable, or store unavailable"),
                },
            }},
            "/api/import/replay": {"post": {
                "summary": "Replay a stored payload as a new run", "operationId": "replayImport", "security": SECURED,
                "description": (
                    "Starts a run (trigger `replay`, `meta.replayOf`) that parses the raw payload stored for a run "
                    "(`runId`; a replay run's is the payload it replayed) or the latest one stored for a feed (`feed`) "
                    "through the normal pipeline, with the feed's current format and mapping, instead of fetching: "
                    "the feed's conditional-GET state is not touched. Counts are exact: unchanged data is all "
                    "`unchanged`. A posting whose stored version was made from a newer payload than the replayed one "
                    "is left as it is (counted `unchanged`): a replay never rolls a posting back. Refused (409) while "
                    "a run of the feed is pending or running, and when the payload is no longer stored "
                    "(RAW_FEED_RETENTION_DAYS) or never was (too large)."),
                "requestBody": _body(_ref("ReplayRequest")),
                "responses": {
                    "202": _linked(_json(_ref("ReplayRequested"),
                                         "the replay run was requested; follow it on /api/import-logs/stream"),
                        GetReplayRun=_link("getImportLog", "runId", "/runs/0/runId")),
                    "400": BAD_REQUEST, "401": UNAUTHORIZED, **GUARDED,
                    "403": _error(f"{CROSS_ORIGIN}; or an unregistered feed without API_TOKEN"),
                    "404": _error("unknown run"),
                    "409": _error("the payload is no longer stored (expired, removed) or never was (too large, a 304, a "
                                  "failed fetch); or a run of the feed is pending or running"),
                    "503": _error("Kafka unavailable, or store unavailable"),
                },
            }},
            "/api/import-logs": {"get": {
                "summary": "Import runs, newest requested first (ties: runId descending)", "operationId": "listImportLogs",
                "parameters": models.query_parameters(models.ImportLogsQuery),
                "responses": {"200": _linked(_json(_ref("ImportLogPage"), "one page"),
                                             GetFirstRun=_link("getImportLog", "runId", "/items/0/runId")),
                              "400": BAD_REQUEST, "503": STORE_UNAVAILABLE},
            }},
            "/api/import-logs/stream": {"get": {
                "summary": "Live run snapshots (Server-Sent Events)", "operationId": "streamImportLogs",
                "description": (
                    "`event: import-log` with the run snapshot as `data:` and an `id:` per event; heartbeat comments "
                    "every 15 s. Reconnect with `Last-Event-ID` to receive the events missed (the last 1000 are "
                    "kept). When they cannot be replayed (another API instance, restart, too old) an "
                    "`event: resync` is sent instead: reload the list over REST."
                ),
                "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 200}}],
                "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}},
                              "503": _error("MAX_SSE_CLIENTS streams are open already: retry later",
                                            {"Retry-After": {"description": "seconds to wait", "required": True,
                                                             "schema": {"type": "integer", "minimum": 1}}})},
            }},
            "/api/import-logs/{runId}": {"get": {
                "summary": "One import run with its failures", "operationId": "getImportLog",
                "parameters": [_path("runId", "the run's id")],
                "responses": {"200": _json(_ref("ImportLog"), "the run"), "404": _error("unknown run"),
                              "503": STORE_UNAVAILABLE},
            }},
            "/api/jobs": {"get": {
                "summary": "Jobs, newest published first (ties: dedupeKey ascending; no date: last)", "operationId": "listJobs",
                "parameters": models.query_parameters(models.JobsQuery),
                "responses": {"200": _linked(_json(_ref("JobPage"), "one page"),
                                             GetFirstJob=_link("getJob", "dedupeKey", "/items/0/dedupeKey")),
                              "400": BAD_REQUEST, "503": STORE_UNAVAILABLE},
            }},
            "/api/jobs/{dedupeKey}": {"get": {
                "summary": "One job", "operationId": "getJob",
                "parameters": [_path("dedupeKey", "sha1 of sourceUrl|guid")],
                "responses": {"200": _json(_ref("Job"), "the job"), "404": _error("unknown job"),
                              "503": STORE_UNAVAILABLE},
            }},
            "/api/feeds": {
                "get": {"summary": "The feed registry with each feed's latest run", "operationId": "listFeeds",
                        "responses": {"200": _json(_ref("FeedList"), "all feeds"),
                            "503": STORE_UNAVAILABLE}},
                "post": {"summary": "Register a feed", "operationId": "addFeed", "security": SECURED,
                         "requestBody": _body(_ref("NewFeed")),
                         "responses": {"201": _linked(_json(_ref("Feed"), "registered"),
                                                      ChangeFeed=_link("changeFeed", "id", "/id"),
                                                      DeleteFeed=_link("deleteFeed", "id", "/id")),
                                       "400": BAD_REQUEST,
                                       "401": UNAUTHORIZED, **GUARDED,
                                       "409": _error("already registered, or the registry holds MAX_FEEDS feeds"),
                                       "503": STORE_UNAVAILABLE}},
            },
            "/api/feeds/preview": {"post": {
                "summary": "Preview how a feed reads, writing nothing", "operationId": "previewFeed", "security": SECURED,
                "description": (
                    "Fetches the URL under the egress policy (FETCH_ALLOW_NETWORKS, FETCH_ALLOW_PORTS) and parses it "
                    "in a parse process with the worker's deadline and limits, with the given format and mapping, "
                    "else the registered feed's. Answers the first 20 normalised postings, the failed items and the "
                    "item count. Writes nothing: no run, no raw payload, no table, no topic. A change for auth and "
                    "rate limiting (it makes the API fetch a URL)."),
                "requestBody": _body(_ref("PreviewRequest")),
                "responses": {
                    "200": _json(_ref("Preview"), "how the feed reads"),
                    "400": BAD_REQUEST, "401": UNAUTHORIZED, **GUARDED,
                    "422": _error("the feed could not be fetched (refused by the egress policy, HTTP error, timeout, too "
                                  "large) or read (not a feed, malformed, a DTD, the parse deadline): the reason"),
                    "503": _error("previews busy (Retry-After), or store unavailable"),
                },
            }},
            "/api/feeds/{id}": {
                "patch": {"summary": "Enable, disable or rename a feed", "operationId": "changeFeed",
                          "description": "Disabling keeps the feed (and FEEDS_FILE seeding never re-enables it); "
                                         "scheduled and default manual runs skip disabled feeds.",
                          "security": SECURED, "parameters": [feed_id],
                          "requestBody": _body(_ref("FeedChange")),
                          "responses": {"200": _json(_ref("Feed"), "the changed feed"), "400": BAD_REQUEST,
                                        "401": UNAUTHORIZED, **GUARDED, "404": _error("unknown feed"),
                                        "503": STORE_UNAVAILABLE}},
                "delete": {"summary": "Remove a feed from the registry", "operationId": "deleteFeed",
                           "description": "A feed listed in FEEDS_FILE comes back at the next start; disable it instead.",
                           "security": SECURED, "parameters": [feed_id],
                           "responses": {"204": {"description": "deleted"}, "400": BAD_REQUEST,
                                         "401": UNAUTHORIZED, **GUARDED, "404": _error("unknown feed"),
                                         "503": STORE_UNAVAILABLE}},
            },
        },
    }
    for item in document["paths"].values():
        for method, operation in item.items():
            responses = operation["responses"]
            responses["421"] = MISDIRECTED
            responses.setdefault("400", BAD_HOST)
            if method == "get" and operation["operationId"] not in UNLIMITED_OPERATIONS:
                responses["429"] = READS_LIMITED
            if method == "get" and operation["operationId"] not in OPEN_OPERATIONS:
                responses["401"] = READ_UNAUTHORIZED
                operation["security"] = READ_SECURED
    return document
