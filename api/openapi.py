"""The OpenAPI 3.1 document of the HTTP API, written by hand next to the handlers it describes.

A test compares its paths and methods with the app's routes, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from api.queries import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, MAX_PAGE, MAX_SKIP
from models.runs import STATUSES

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _page(item: str) -> Schema:
    return {
        "type": "object",
        "required": ["items", "page", "limit", "total", "totalExact", "next"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "page": {"type": "integer", "minimum": 1, "description": "this page's number (also when reached by cursor)"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "total": {"type": ["integer", "null"], "minimum": 0, "description": (
                "with `total=1`: the exact number of matching items. Otherwise, without filters: the "
                "collection's estimated document count (from metadata, no scan); with filters: null (not counted)")},
            "totalExact": {"type": "boolean", "description": "true when `total` is an exact count (`total=1`)"},
            "next": {"type": ["string", "null"], "description": "cursor of the next page (pass it as `after`); "
                                                                  "null on the last page"},
        },
    }


PAGING = [
    _query("page", f"1-based page number, for shallow pages: (page-1)*limit must be <= {MAX_SKIP} (400 beyond); "
                   "deeper pages go by `after`", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}),
    _query("limit", "items per page", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
    _query("after", "opaque cursor: the `next` of the previous page. Opens the page after it, at any depth, without "
                    "gaps or repeats when items are added meanwhile. Not together with `page`",
           {"type": "string", "maxLength": MAX_CURSOR_LENGTH}),
    _query("total", "1/true: count every matching item (reads them all: slow on big filtered sets)",
           {"type": "boolean", "default": False}),
]
BAD_REQUEST = _error("invalid parameter or body")
STORE_UNAVAILABLE = _error("MongoDB did not answer within API_STORE_TIMEOUT_SECONDS: `store unavailable`")
UNAUTHORIZED = _error("API_TOKEN is set and the request lacks `Authorization: Bearer <token>`")
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0}

SCHEMAS: dict[str, Schema] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Health": {
        "type": "object",
        "required": ["status", "kafka", "mongo"],
        "properties": {
            "status": {"enum": ["ok", "error"]},
            "kafka": {"type": "string", "description": "`ok` or `error: <why>`"},
            "mongo": {"type": "string", "description": "`ok` or `error: <why>`"},
        },
    },
    "Failure": {
        "type": "object",
        "properties": {"key": {"type": "string"}, "reason": {"type": "string"}, "stage": {"type": "string"}},
    },
    "ImportLog": {
        "type": "object",
        "description": "One import run (SPEC §3 `import_logs`). Lists omit `failures`; the detail has them.",
        "properties": {
            "runId": {"type": "string"},
            "sourceUrl": {"type": "string", "format": "uri"},
            "fileName": {"type": "string"},
            "sourceName": {"type": "string"},
            "trigger": {"enum": ["schedule", "manual", "cli"]},
            "status": {"enum": list(STATUSES)},
            "requestedAt": TIMESTAMP,
            "startedAt": TIMESTAMP,
            "finishedAt": TIMESTAMP,
            "durationMs": {"type": ["integer", "null"]},
            "totalFetched": COUNT,
            "newJobs": COUNT,
            "updatedJobs": COUNT,
            "unchangedJobs": COUNT,
            "failedJobs": COUNT,
            "totalImported": COUNT,
            "failures": {"type": "array", "items": _ref("Failure")},
            "failuresTruncated": {"type": "boolean"},
            "error": {"type": ["string", "null"]},
            "meta": {"type": "object"},
        },
    },
    "Job": {
        "type": "object",
        "description": "One posting (SPEC §3 `jobs`). Lists omit `description`; the detail has it.",
        "properties": {
            "dedupeKey": {"type": "string"},
            "sourceUrl": {"type": "string"},
            "sourceName": {"type": "string"},
            "externalId": {"type": "string"},
            "title": {"type": "string"},
            "company": {"type": ["string", "null"]},
            "location": {"type": ["string", "null"]},
            "jobType": {"type": ["string", "null"]},
            "categories": {"type": "array", "items": {"type": "string"}},
            "region": {"type": ["string", "null"]},
            "url": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"]},
            "publishedAt": TIMESTAMP,
            "fingerprint": {"type": "string"},
            "version": {"type": "integer"},
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
            "lastRunId": {"type": "string"},
        },
    },
    "Feed": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "MongoDB ObjectId, 24 hex characters"},
            "url": {"type": "string", "format": "uri"},
            "name": {"type": "string"},
            "enabled": {"type": "boolean"},
            "createdAt": TIMESTAMP,
            "lastRun": {"oneOf": [{"type": "null"}, {"type": "object", "description": "runId, status and times"}]},
        },
    },
    "NewFeed": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "http(s) URL"},
            "name": {"type": "string", "description": "default: the URL's host"},
            "enabled": {"type": "boolean", "default": True},
        },
    },
    "FeedChange": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {"enabled": {"type": "boolean"}, "name": {"type": "string"}},
    },
}


def openapi_document() -> dict[str, Any]:
    feed_id = _path("id", "the feed's id (24 hex characters)")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobstream API",
            "version": "1.0.0",
            "description": ("Import history, live import progress (SSE), jobs and the feed registry of jobstream. "
                            "Every endpoint that uses MongoDB answers 503 `{\"error\": \"store unavailable\"}` when "
                            "the store does not answer within API_STORE_TIMEOUT_SECONDS (default 5)."),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Required for POST/PATCH/DELETE when API_TOKEN is set"}},
        },
        "paths": {
            "/": {"get": {"summary": "The live dashboard (HTML)", "operationId": "dashboard",
                          "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}},
            "/static/{path}": {"get": {
                "summary": "The dashboard's scripts, styles and icons", "operationId": "staticFile",
                "parameters": [_path("path", "file below api/static, e.g. js/main.js")],
                "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
            }},
            "/health": {"get": {
                "summary": "Liveness of Kafka and MongoDB", "operationId": "health",
                "responses": {"200": _json(_ref("Health"), "both reachable"),
                              "503": _json(_ref("Health"), "the failing part says `error: ...`")},
            }},
            "/metrics": {"get": {"summary": "Prometheus metrics of the API process", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text exposition",
                                                       "content": {"text/plain": {}}}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                          "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
            "/api/import/run": {"post": {
                "summary": "Request import runs now", "operationId": "runImport", "security": SECURED,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"feeds": {"type": "array", "minItems": 1,
                                             "items": {"type": "string", "format": "uri"},
                                             "description": "default: every enabled feed of the registry"}},
                }}}},
                "responses": {
                    "202": _json({"type": "object", "properties": {"runs": {"type": "array", "items": {
                        "type": "object", "properties": {"runId": {"type": "string"}, "sourceUrl": {"type": "string"}},
                    }}}}, "runs requested; follow them on /api/import-logs/stream"),
                    "400": BAD_REQUEST, "401": UNAUTHORIZED, "503": _error("Kafka unavailable"),
                },
            }},
            "/api/import-logs": {"get": {
                "summary": "Import runs, newest requested first (ties: runId descending)", "operationId": "listImportLogs",
                "parameters": [
                    *PAGING,
                    _query("status", "one status or a comma-separated list", {"type": "string",
                                                                              "examples": ["running,pending"]}),
                    _query("source", "exact feed URL", {"type": "string"}),
                    _query("since", "runs requested at or after this ISO-8601 time",
                           {"type": "string", "format": "date-time"}),
                ],
                "responses": {"200": _json(_page("ImportLog"), "one page"), "400": BAD_REQUEST,
                              "503": STORE_UNAVAILABLE},
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
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}}},
            }},
            "/api/import-logs/{runId}": {"get": {
                "summary": "One import run with its failures", "operationId": "getImportLog",
                "parameters": [_path("runId", "the run's id")],
                "responses": {"200": _json(_ref("ImportLog"), "the run"), "404": _error("unknown run")},
            }},
            "/api/jobs": {"get": {
                "summary": "Jobs, newest published first (ties: dedupeKey ascending; no date: last)", "operationId": "listJobs",
                "parameters": [
                    *PAGING,
                    _query("q", "text in the title or company, case-insensitive", {"type": "string"}),
                    _query("source", "exact feed URL", {"type": "string"}),
                    _query("company", "company name, case-insensitive exact match", {"type": "string"}),
                ],
                "responses": {"200": _json(_page("Job"), "one page"), "400": BAD_REQUEST, "503": STORE_UNAVAILABLE},
            }},
            "/api/jobs/{dedupeKey}": {"get": {
                "summary": "One job", "operationId": "getJob",
                "parameters": [_path("dedupeKey", "sha1 of sourceUrl|guid")],
                "responses": {"200": _json(_ref("Job"), "the job"), "404": _error("unknown job")},
            }},
            "/api/feeds": {
                "get": {"summary": "The feed registry with each feed's latest run", "operationId": "listFeeds",
                        "responses": {"200": _json({"type": "object", "properties": {
                            "items": {"type": "array", "items": _ref("Feed")}, "total": COUNT}}, "all feeds")}},
                "post": {"summary": "Register a feed", "operationId": "addFeed", "security": SECURED,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewFeed")}}},
                         "responses": {"201": _json(_ref("Feed"), "registered"), "400": BAD_REQUEST,
                                       "401": UNAUTHORIZED, "409": _error("already registered")}},
            },
            "/api/feeds/{id}": {
                "patch": {"summary": "Enable, disable or rename a feed", "operationId": "changeFeed",
                          "description": "Disabling keeps the feed (and FEEDS_FILE seeding never re-enables it); "
                                         "scheduled and default manual runs skip disabled feeds.",
                          "security": SECURED, "parameters": [feed_id],
                          "requestBody": {"required": True,
                                          "content": {"application/json": {"schema": _ref("FeedChange")}}},
                          "responses": {"200": _json(_ref("Feed"), "the changed feed"), "400": BAD_REQUEST,
                                        "401": UNAUTHORIZED, "404": _error("unknown feed")}},
                "delete": {"summary": "Remove a feed from the registry", "operationId": "deleteFeed",
                           "description": "A feed listed in FEEDS_FILE comes back at the next start; disable it instead.",
                           "security": SECURED, "parameters": [feed_id],
                           "responses": {"204": {"description": "deleted"}, "400": BAD_REQUEST,
                                         "401": UNAUTHORIZED, "404": _error("unknown feed")}},
            },
        },
    }
