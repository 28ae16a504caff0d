"""A payload too large to keep in raw_feeds leaves no validators behind.

If the ETag were saved without the payload, a replayed command (after a crash) or the next run
would get a 304 and end "completed, 0 items" while the feed's items were never imported.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest

from tests.e2e.test_pipeline import run_import
from tests.support import FeedServer, Process, mongo_db, rss

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_a_payload_too_large_to_store_saves_no_validators(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    # 21 MiB of base64 text compresses to about 16 MiB, over raw_feeds' 15 MiB limit.
    incompressible = base64.b64encode(os.urandom(16 * 1024 * 1024)).decode()
    items = [{"guid": f"big-{i}", "title": f"Engineer {i}", "description": incompressible[i * 750_000:(i + 1) * 750_000]}
             for i in range(30)]
    url = feed_server.put(f"{unique}-big.xml", rss(items), conditional=True)
    [first] = await run_import(pipeline_env, url, timeout=300)
    assert first["newJobs"] == 30, first
    db = mongo_db(pipeline_env)
    assert db.raw_feeds.count_documents({"sourceUrl": url}) == 0, "the payload is over the store's limit"
    state = db.fetch_state.find_one({"sourceUrl": url})
    assert state is None or not state.get("etag"), state

    [second] = await run_import(pipeline_env, url, timeout=300)
    assert not second["meta"].get("notModified"), second["meta"]
    assert second["totalFetched"] == 30 and second["unchangedJobs"] == 30, second
