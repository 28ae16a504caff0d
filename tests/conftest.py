"""Session fixtures: the real local stack (or the user's services), and per-test isolated names."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest

from tests.support import WORKER_READY, FeedServer, Process, delete_topics, isolated_env

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FEEDS = ROOT.parent / "shared" / "feeds"


@dataclass(frozen=True)
class Stack:
    kafka: str
    mongo_url: str


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka and MongoDB for real: the ones in the environment, else the project's own, started here."""
    kafka, mongo = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGO_URL")
    if kafka and mongo:
        yield Stack(kafka, mongo)
        return
    record = Path(tempfile.mkstemp(prefix="jobstream-stack-")[1])
    subprocess.run([sys.executable, str(ROOT / "deploy" / "stack.py"), "up", "--record", str(record)], check=True)
    try:
        yield Stack(kafka or "127.0.0.1:9092", mongo or "mongodb://127.0.0.1:27017")
    finally:
        subprocess.run([sys.executable, str(ROOT / "deploy" / "stack.py"), "down", "--record", str(record)], check=False)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, consumer groups and databases of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def feed_server() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def pipeline_env(stack: Stack, unique: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of one isolated pipeline (topics, group, database, ports of its own).

    Its topics are deleted afterwards (its workers are stopped first: ``start_worker`` depends on this
    fixture): a suite that left them would leave the broker thousands of partitions heavier.
    """
    env = isolated_env(stack.kafka, stack.mongo_url, unique, tmp_path)
    yield env
    asyncio.run(delete_topics(env))


@pytest.fixture
def start_worker(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``jobstream worker`` subprocesses on the test's pipeline; all are stopped at the end."""
    started: list[Process] = []

    def start(**overrides: str) -> Process:
        worker = Process("worker", {**pipeline_env, **overrides}, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        worker.start(WORKER_READY)
        return worker

    yield start
    for worker in started:
        worker.stop()
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(pipeline_env["MONGO_URL"])
    client.drop_database(pipeline_env["MONGO_DB"])
    client.close()
