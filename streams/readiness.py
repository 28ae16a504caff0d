"""Is this worker really working? ``/ready`` and ``/metrics`` on the worker's metrics port.

A worker process that is up is not yet a worker that consumes: it must join its consumer group,
get its partitions (or learn it has none) and recover its tables from their changelogs before any
command it is handed can run. ``make run``, ``make status`` and a Kubernetes readiness probe ask
``/ready``, which answers 200 only then, and 503 with the reason before.

The state is read from the Faust app on the event loop (``watch``) and kept as an immutable
snapshot; the HTTP server runs in a thread (as prometheus_client's does), so it answers even while
the loop is busy, and it reports a loop that has not refreshed the snapshot for a while as not ready.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

REFRESH_SECONDS = 0.5
# The loop refreshes the snapshot every REFRESH_SECONDS; one this old means the loop is stuck.
STALE_SECONDS = 30.0


@dataclass(frozen=True)
class Readiness:
    """What ``/ready`` answers: ready or the first reason not to be, and the group state it saw."""

    ready: bool
    reason: str
    generation: int
    partitions: int
    at: float  # time.monotonic() of the snapshot


@dataclass(frozen=True)
class AppState:
    """The facts of a Faust app that decide readiness (read on the event loop)."""

    joined: bool  # an assignment was received (possibly empty)
    rebalancing: bool
    recovering: bool
    recovered: bool  # the tables' first recovery completed
    generation: int
    partitions: int
    store_prepared: bool


def judge(state: AppState, now: float) -> Readiness:
    """Pure: the readiness of a worker in ``state``; the reason names the first unmet condition."""
    reasons = (
        (not state.joined, "not yet joined its consumer group"),
        (state.rebalancing, "consumer group rebalancing"),
        (state.recovering or not state.recovered, "recovering its tables from their changelogs"),
        (not state.store_prepared, "preparing MongoDB (indexes, feed registry)"),
    )
    reason = next((text for failed, text in reasons if failed), "")
    return Readiness(not reason, reason or "ready", state.generation, state.partitions, now)


def app_state(app: Any, store_prepared: bool) -> AppState:
    """Read the app's group and recovery state (Faust keeps the assignment in a private attribute)."""
    assignment = getattr(app, "_assignment", None)
    recovery = app.tables.recovery
    return AppState(
        joined=assignment is not None,
        rebalancing=bool(app.rebalancing),
        recovering=bool(app.in_recovery),
        recovered=recovery.completed.is_set(),
        generation=int(app.consumer_generation_id or 0),
        partitions=len(assignment or ()),
        store_prepared=store_prepared,
    )


class ReadinessProbe:
    """The latest snapshot, written by the event loop and read by the HTTP thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.store_prepared = False
        self.snapshot = Readiness(False, "starting", 0, 0, clock())

    def refresh(self, app: Any) -> None:
        self.snapshot = judge(app_state(app, self.store_prepared), self.clock())

    async def watch(self, app: Any) -> None:
        """Refresh forever (a Faust task of the worker)."""
        while True:
            self.refresh(app)
            await asyncio.sleep(REFRESH_SECONDS)

    def current(self) -> Readiness:
        """The snapshot, or not ready when the loop stopped refreshing it."""
        snapshot = self.snapshot
        stale = self.clock() - snapshot.at
        if stale > STALE_SECONDS:
            return Readiness(False, f"event loop has not answered for {stale:.0f}s", snapshot.generation,
                             snapshot.partitions, snapshot.at)
        return snapshot


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Probes every half second would flood the worker's log."""


def probe_app(probe: ReadinessProbe) -> Callable[..., Iterable[bytes]]:
    """WSGI: ``/ready`` (200 or 503, JSON) beside prometheus_client's ``/metrics``."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/ready":
            state = probe.current()
            body = json.dumps({k: v for k, v in asdict(state).items() if k != "at"}).encode()
            start_response("200 OK" if state.ready else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def serve_probes(probe: ReadinessProbe, host: str, port: int) -> ThreadingWSGIServer:
    """Start the metrics and readiness server in a daemon thread; fails at once if the port is taken."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("ProbeServer", (ThreadingWSGIServer,), {"address_family": family})
    server: ThreadingWSGIServer = make_server(host, port, probe_app(probe), server_class,
                                              handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
