"""The live stream: snapshots produced on import.logs reach SSE clients, and a reconnect resumes without gaps."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from api.context import HUB
from tests.api.conftest import MakeApi
from tests.api.support import ApiHarness, SseReader, eventually, fast_options, produce_snapshots, run_doc, sample

pytestmark = pytest.mark.integration

STREAM = "/api/import-logs/stream"


def snapshot(status: str = "running", **fields: Any) -> dict[str, Any]:
    doc = run_doc(f"sse-{uuid.uuid4().hex[:12]}", f"https://{uuid.uuid4().hex[:6]}.example.com/feed.xml", status, None)
    doc.update(fields)
    return doc


def for_run(run_id: str) -> Any:
    return lambda message: message.json.get("runId") == run_id


async def open_stream(api: ApiHarness, last_event_id: str | None = None) -> tuple[aiohttp.ClientResponse, SseReader]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await api.client.get(STREAM, headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response, SseReader(response)


async def test_snapshot_on_import_logs_reaches_the_stream(api: ApiHarness) -> None:
    response, reader = await open_stream(api)
    try:
        doc = snapshot("running", newJobs=3, totalFetched=10)
        await produce_snapshots(api.settings, [doc])
        event = await reader.event(15, where=for_run(doc["runId"]))
        assert event.json == doc
        assert event.id and event.id.startswith(api.app[HUB].boot + "-")
    finally:
        response.close()


async def test_every_client_gets_every_event_in_order(api: ApiHarness) -> None:
    streams = [await open_stream(api) for _ in range(2)]
    try:
        docs = [snapshot("pending"), snapshot("running"), snapshot("completed")]
        await produce_snapshots(api.settings, docs)
        wanted = {doc["runId"] for doc in docs}
        for _, reader in streams:
            seen = []
            for _ in docs:  # different runs live on different partitions: no order between them
                event = await reader.event(15, where=lambda m: m.json.get("runId") in wanted)
                seen.append(event.json["runId"])
            assert sorted(seen) == sorted(doc["runId"] for doc in docs)
        one_run = snapshot("pending")
        steps = [one_run, {**one_run, "status": "running"}, {**one_run, "status": "completed"}]
        await produce_snapshots(api.settings, steps)
        for _, reader in streams:
            statuses = [(await reader.event(15, where=for_run(one_run["runId"]))).json["status"] for _ in steps]
            assert statuses == ["pending", "running", "completed"]
    finally:
        for response, _ in streams:
            response.close()


async def test_reconnect_with_last_event_id_replays_the_events_missed(api: ApiHarness) -> None:
    hub = api.app[HUB]
    response, reader = await open_stream(api)
    first = snapshot("pending")
    await produce_snapshots(api.settings, [first])
    seen = await reader.event(15, where=for_run(first["runId"]))
    response.close()  # the client goes away ...

    missed = [{**first, "status": "running", "newJobs": 1}, {**first, "status": "completed", "newJobs": 2}]
    await produce_snapshots(api.settings, missed)
    assert seen.id is not None
    seen_seq = int(seen.id.rsplit("-", 1)[1])
    # ... and the API receives both while it is away
    await eventually(lambda: _ready([e for e in hub.ring if e.seq > seen_seq and e.run_id == first["runId"]], 2),
                     15, "the missed snapshots to reach the API")

    response, reader = await open_stream(api, last_event_id=seen.id)
    try:
        replayed = [await reader.event(5, where=for_run(first["runId"])) for _ in missed]
        assert [event.json for event in replayed] == missed
        ids = [int(str(event.id).rsplit("-", 1)[1]) for event in replayed]
        assert seen_seq < ids[0] < ids[1]
    finally:
        response.close()


async def _ready(items: list[Any], count: int) -> list[Any] | None:
    return items if len(items) >= count else None


async def test_unknown_last_event_id_gets_a_resync_event(api: ApiHarness) -> None:
    response, reader = await open_stream(api, last_event_id="another-instance-42")
    try:
        resync = await reader.event(5, kind="resync")
        assert resync.id == api.app[HUB].last_id
        assert resync.json == {"lastEventId": api.app[HUB].last_id}
        doc = snapshot()  # and the stream goes on live
        await produce_snapshots(api.settings, [doc])
        assert (await reader.event(15, where=for_run(doc["runId"]))).json == doc
    finally:
        response.close()


async def test_heartbeat_comments_keep_an_idle_stream_alive(make_api: MakeApi) -> None:
    quick = await make_api(fast_options(sse_ping_seconds=0.2))
    response, reader = await open_stream(quick)
    try:
        first = await reader.message(5)
        assert first is not None and first.comments == [] and first.event == "message"  # the retry: hint
        pings = 0
        while pings < 2:
            message = await reader.message(5)
            assert message is not None and message.comments == ["ping"], message
            pings += 1
    finally:
        response.close()


async def test_client_gauge_follows_open_streams(api: ApiHarness) -> None:
    async def count() -> float:
        response = await api.client.get("/metrics")
        return sample(await response.text(), "jobstream_api_sse_clients", {})

    async def clients(expected: float) -> bool:
        return await count() == expected

    base = await count()
    response, _ = await open_stream(api)
    await eventually(lambda: clients(base + 1), 5, "the gauge to count the open stream")
    response.close()
    doc = snapshot()  # the server notices a gone client when it next writes to it
    await produce_snapshots(api.settings, [doc])
    await eventually(lambda: clients(base), 15, "the gauge to drop the closed stream")


async def test_shutdown_ends_open_streams(make_api: MakeApi) -> None:
    own = await make_api()
    response, reader = await open_stream(own)
    first = await reader.message(5)
    assert first is not None
    closing = asyncio.create_task(own.client.server.close())
    try:
        assert await reader.message(10) is None, "the stream must end when the server shuts down"
        await asyncio.wait_for(closing, 15)
    finally:
        response.close()
