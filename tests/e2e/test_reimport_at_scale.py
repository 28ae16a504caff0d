"""A re-import where hundreds of postings changed: exact counts, every posting written, reads served.

On FerretDB as shipped, an update command of 100+ statements wedged the whole database (and the
API with it); the sink now sends commands of at most MONGO_WRITE_BATCH statements and the local
build takes 500 (deploy/ferretdb/patches).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.api.support import start_api
from tests.e2e.test_pipeline import counts, postings, run_import
from tests.support import FeedServer, Process, mongo_db, rss

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ITEMS = 1200
CHANGED = 600


async def test_reimport_with_600_changed_postings_is_exact_while_the_api_serves_reads(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-big.xml", rss(postings(ITEMS)), conditional=False)
    [first] = await run_import(pipeline_env, url, timeout=300)
    assert counts(first) == (ITEMS, ITEMS, 0, 0, 0)

    changed = postings(ITEMS)
    for item in changed[:CHANGED]:
        item["description"] = "A changed job."
    feed_server.put(f"{unique}-big.xml", rss(changed), conditional=False)

    api = await start_api(pipeline_env)
    answers: list[tuple[str, int, float]] = []
    done = asyncio.Event()

    async def read_beside() -> None:
        paths = ("/api/jobs?limit=50", "/api/import-logs?limit=50", "/api/jobs?limit=50&q=engineer", "/health")
        while not done.is_set():
            for path in paths:
                started = time.monotonic()
                response = await api.client.get(path)
                await response.read()
                answers.append((path, response.status, time.monotonic() - started))
            await asyncio.sleep(0.05)

    reader = asyncio.create_task(read_beside())
    try:
        [update] = await run_import(pipeline_env, url, timeout=300)
    finally:
        done.set()
        await reader
        await api.client.close()

    assert update["status"] == "completed", update
    assert counts(update) == (ITEMS, 0, CHANGED, ITEMS - CHANGED, 0)
    db = mongo_db(pipeline_env)
    assert db.jobs.count_documents({"sourceUrl": url, "version": 2, "description": "A changed job."}) == CHANGED
    assert db.jobs.count_documents({"sourceUrl": url, "version": 1}) == ITEMS - CHANGED
    assert len(answers) >= 8, "the reads beside the import did not run"
    assert {status for _, status, _ in answers} == {200}, [a for a in answers if a[1] != 200][:5]
