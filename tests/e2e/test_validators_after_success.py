"""ETag and Last-Modified are kept only once a run published every item (issue 22, item 3).

Saved at fetch time, they outlived a run that then failed: the server's answer to run 1 was cut
short (broken XML), run 2 sent ``If-None-Match``, got 304 and ended "completed, 0 items", and none
of the feed's 500 postings were stored until it changed upstream.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web

from tests.e2e.test_pipeline import run_import
from tests.support import LoopbackServer, Process, mongo_db, rss

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ITEMS = 500
ETAG = '"v1"'


class CutShortOnce(LoopbackServer):
    """One feed whose first answer is cut short; its ETag stands for the whole document throughout."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.conditional: list[str | None] = []  # If-None-Match of each request

    async def answer(self, name: str, request: web.Request) -> web.StreamResponse:
        self.conditional.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        body = self.body[: len(self.body) // 2] if len(self.conditional) == 1 else self.body
        return web.Response(body=body, content_type="application/rss+xml", headers={"ETag": ETAG})


async def test_a_failed_run_leaves_no_validators_and_the_next_run_imports_every_posting(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], unique: str
) -> None:
    server = CutShortOnce(rss([{"guid": f"{unique}-{i}", "title": f"Engineer {i}"} for i in range(ITEMS)]))
    await server.start()
    try:
        start_worker()
        url = server.url(f"{unique}.xml")
        [first] = await run_import(pipeline_env, url)
        assert first["status"] == "failed" and first["totalFetched"] == 0, first
        db = mongo_db(pipeline_env)
        assert db.fetch_state.find_one({"sourceUrl": url}) is None, "a failed run keeps no validators"

        [second] = await run_import(pipeline_env, url)
        assert server.conditional == [None, None], "run 2 must not ask for a 304"
        assert (second["status"], second["totalFetched"], second["newJobs"]) == ("completed", ITEMS, ITEMS), second
        assert db.jobs.count_documents({"sourceUrl": url}) == ITEMS

        state = db.fetch_state.find_one({"sourceUrl": url})  # a run that published everything keeps them
        assert state is not None and state["etag"] == ETAG, state
        [third] = await run_import(pipeline_env, url)
        assert server.conditional[-1] == ETAG and third["meta"]["notModified"] is True, third
    finally:
        await server.stop()
