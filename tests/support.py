"""Helpers for tests that run the real pipeline: a feed server, a worker subprocess, isolated settings."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient

from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(kafka: str, mongo_url: str, unique: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """Environment of one test's pipeline: its own topics, consumer group, database and ports."""
    feeds_file = workdir / "feeds.yaml"
    if not feeds_file.exists():
        feeds_file.write_text("feeds: []\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGO_URL": mongo_url,
        "MONGO_DB": f"t_{unique}",
        "TOPIC_PREFIX": f"t{unique}.",
        "APP_ID": f"t{unique}",
        "FEEDS_FILE": str(feeds_file),
        "DATA_DIR": str(workdir / "worker-data"),
        "WORKER_METRICS_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "IMPORT_INTERVAL_MINUTES": "600",
        "BATCH_SIZE": "500",
        "BATCH_WINDOW_SECONDS": "0.2",
        "TOPIC_PARTITIONS": "4",
        "LOG_LEVEL": "INFO",
        "IMPORT_ON_START": "false",
        "REPAIR_AFTER_SECONDS": "15",
        # The feed servers of the tests listen on 127.0.0.1 with a random port: the egress policy
        # refuses both by default.
        "FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "FETCH_ALLOW_PORTS": "80,443,1024-65535",
    }
    env.update(overrides)
    return env


def settings_of(env: Mapping[str, str]) -> Settings:
    return Settings.from_env(env)


@dataclass
class Process:
    """A ``jobstream`` subprocess (worker or api) with its log file; stopped by PID only."""

    role: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self, ready_marker: str, timeout: float = 90.0) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "streams.cli", self.role],
                cwd=ROOT, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        offset = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} exited with {self.proc.returncode}:\n{self.log_tail()}")
            text = self.log_path.read_text(errors="replace")
            if ready_marker in text[offset:]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.role} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the crash the pipeline must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


WORKER_READY = "Worker ready"
PEAK_RSS_LINE = re.compile(r"parse process peak_rss_mb=([0-9.]+) limit_mb=(\S+) pid=(\d+) url=(\S+)")


def parse_peaks(log: Path) -> dict[str, tuple[float, str]]:
    """Per feed URL, the largest peak RSS (MiB) a worker logged for its parse processes, with the limit it logged.

    A parse process's peak is its high-water mark over its life: a process reused for several feeds
    reports the largest so far, so a feed's figure bounds what its own parse took from above.
    """
    peaks: dict[str, tuple[float, str]] = {}
    for match in PEAK_RSS_LINE.finditer(log.read_text(errors="replace")):
        url, peak = match.group(4), float(match.group(1))
        if peak >= peaks.get(url, (0.0, ""))[0]:
            peaks[url] = (peak, match.group(2))
    return peaks


class LoopbackServer:
    """A test HTTP server on one loopback address: records each request's name and follows ``redirects``.

    Subclasses answer in ``answer``; ``hits`` lets a test prove a server was never contacted.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.hits: list[str] = []
        self.redirects: dict[str, str] = {}
        self.runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits.append(name)
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        return await self.answer(name, request)

    async def answer(self, name: str, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        # A short shutdown: a handler that never answers (a stalled feed) must not hold the test.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class FeedServer(LoopbackServer):
    """Serves feeds from 127.0.0.1 that a test can change between imports (with ETag support)."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds: dict[str, tuple[bytes, str, bool]] = {}

    def put(self, name: str, body: bytes, content_type: str = "application/rss+xml", conditional: bool = True) -> str:
        """Serve ``body`` at /name; ``conditional`` sends an ETag and answers If-None-Match with 304."""
        self.feeds[name] = (body, content_type, conditional)
        return self.url(name)

    async def answer(self, name: str, request: web.Request) -> web.StreamResponse:
        if name not in self.feeds:
            return web.Response(status=404, text="no such feed")
        body, content_type, conditional = self.feeds[name]
        if not conditional:
            return web.Response(body=body, content_type=content_type)
        etag = f'"{zlib.crc32(body):x}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type=content_type, headers={"ETag": etag})


def rss(items: Sequence[Mapping[str, Any]], title: str = "Test feed") -> bytes:
    """A small RSS 2.0 document; each item maps guid/title/company/description/link."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0" xmlns:job_listing="https://wpjobmanager.com/job-listing"><channel>',
        f"<title>{title}</title>",
    ]
    for item in items:
        parts.append(
            "<item>"
            f"<title>{item['title']}</title>"
            f"<link>{item.get('link', 'https://example.com/jobs/' + str(item['guid']))}</link>"
            f"<guid isPermaLink=\"false\">{item['guid']}</guid>"
            f"<job_listing:company>{item.get('company', 'Acme')}</job_listing:company>"
            f"<description>{item.get('description', 'A job.')}</description>"
            "<pubDate>Mon, 06 Jan 2025 10:00:00 +0000</pubDate>"
            "</item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a synchronous check until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mongo_db(env: Mapping[str, str]) -> pymongo.database.Database[dict[str, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(env["MONGO_URL"], tz_aware=True)
    return client[env["MONGO_DB"]]


async def delete_topics(env: dict[str, str]) -> None:
    """Leave the broker as we found it: the topics of this prefix (and the app's changelogs) go."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith((env["TOPIC_PREFIX"], env["APP_ID"] + "-"))]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
