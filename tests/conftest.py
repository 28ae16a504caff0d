"""Session fixtures: the real local stack (or the user's services), and per-test isolated names."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
