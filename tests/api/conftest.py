"""Fixtures of the API tests: one shared API on its own isolated pipeline, and a factory for special ones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pymongo
import pytest

from api.context import ApiOptions
from tests.api.support import ApiHarness, fast_options, start_api
from tests.conftest import Stack
from tests.support import delete_topics, isolated_env

MakeApi = Callable[..., Awaitable[ApiHarness]]


@pytest.fixture(scope="session")
async def shared_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    """Topics and a database for the API tests that can share them (each test uses its own URLs/ids)."""
    unique = uuid.uuid4().hex[:10]
    env = isolated_env(stack.kafka, stack.mongo_url, unique, tmp_path_factory.mktemp("api"))
    yield env
    drop_database(env)
    await delete_topics(env)


@pytest.fixture(scope="session")
async def api(shared_env: dict[str, str]) -> AsyncIterator[ApiHarness]:
    harness = await start_api(shared_env)
    yield harness
    await harness.close()


@pytest.fixture
async def make_api(shared_env: dict[str, str]) -> AsyncIterator[MakeApi]:
    """Start extra APIs (own database unless told otherwise, shared topics); all closed after the test."""
    started: list[ApiHarness] = []

    async def make(options: ApiOptions | None = None, **overrides: str) -> ApiHarness:
        env = {**shared_env, "MONGO_DB": f"t_{uuid.uuid4().hex[:10]}", **overrides}
        harness = await start_api(env, options or fast_options())
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.close()
        if harness.env["MONGO_DB"] != shared_env["MONGO_DB"] and harness.env["MONGO_URL"] == shared_env["MONGO_URL"]:
            drop_database(harness.env)
        if harness.env["TOPIC_PREFIX"] != shared_env["TOPIC_PREFIX"]:
            await delete_topics(harness.env)


def drop_database(env: dict[str, str]) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(env["MONGO_URL"], serverSelectionTimeoutMS=3000)
    try:
        client.drop_database(env["MONGO_DB"])
    finally:
        client.close()
