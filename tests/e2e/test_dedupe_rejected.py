"""A posting MongoDB rejected is not ``unchanged`` in the next run (issue 9): real worker, Kafka and store.

The sink's part (sending ``rejected`` to jobs.parsed) is reproduced here with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from models.dedupe import rejected_event
from streams.commands import aiokafka_sender, producer_for
from tests.e2e.test_pipeline import counts, postings, run_import
from tests.support import FeedServer, Process, mongo_db, rss, settings_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_rejected_posting_is_written_again_by_the_next_run(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    items: list[Mapping[str, Any]] = list(postings(3))
    url = feed_server.put(f"{unique}-r.xml", rss(items), conditional=False)
    db = mongo_db(pipeline_env)
    [first] = await run_import(pipeline_env, url)
    assert counts(first) == (3, 3, 0, 0, 0)

    # MongoDB "rejected" one of them: the document is not there, the sink tells the dedupe table.
    doc = db.jobs.find_one({"sourceUrl": url}, sort=[("dedupeKey", 1)])
    assert doc is not None
    db.jobs.delete_one({"_id": doc["_id"]})
    change = {"job": {"dedupeKey": doc["dedupeKey"]}, "fingerprint": doc["fingerprint"], "version": doc["version"],
              "runId": first["runId"], "seq": 0}
    settings = settings_of(pipeline_env)
    producer = producer_for(settings)
    await producer.start()
    try:
        await aiokafka_sender(producer)(settings.topic("jobs.parsed"), doc["dedupeKey"], rejected_event(change, "write error 2: x"))
    finally:
        await producer.stop()

    [second] = await run_import(pipeline_env, url)
    assert counts(second) == (3, 0, 1, 2, 0), "the rejected posting is updated (written again), not unchanged"
    again = db.jobs.find_one({"_id": doc["_id"]})
    assert again is not None and again["version"] == 2 and again["fingerprint"] == doc["fingerprint"]
