"""Pure input handling of the API (no server): every rule that turns a query or body into a filter or a 400."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from api import queries
from api.events import LogHub, snapshot_from
from api.queries import ApiError, Page
from models.registry import FeedEntry


def status_of(call: Any, *args: Any) -> int:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value.status


@pytest.mark.parametrize(("query", "expected"), [
    ({}, Page(1, 50)),
    ({"page": "3", "limit": "10"}, Page(3, 10)),
    ({"page": " 2 ", "limit": "200"}, Page(2, 200)),
    ({"page": "", "limit": ""}, Page(1, 50)),
])
def test_page_parses_valid_values(query: dict[str, str], expected: Page) -> None:
    assert queries.parse_page(query) == expected


@pytest.mark.parametrize("query", [
    {"page": "0"}, {"page": "-1"}, {"page": "x"}, {"page": "1.5"}, {"limit": "0"}, {"limit": "201"}, {"limit": "ten"},
])
def test_page_rejects_bad_values_with_400(query: dict[str, str]) -> None:
    assert status_of(queries.parse_page, query) == 400


def test_page_skip() -> None:
    assert Page(3, 20).skip == 40


@pytest.mark.parametrize(("page", "unstarted", "expected"), [
    (Page(1, 10), 0, queries.Slices(0, 0, 0, 10)),
    (Page(1, 10), 3, queries.Slices(0, 3, 0, 7)),
    (Page(1, 10), 10, queries.Slices(0, 10, 0, 0)),
    (Page(1, 10), 25, queries.Slices(0, 10, 0, 0)),
    (Page(2, 10), 3, queries.Slices(3, 0, 7, 10)),
    (Page(2, 10), 15, queries.Slices(10, 5, 0, 5)),
    (Page(3, 10), 25, queries.Slices(20, 5, 0, 5)),
    (Page(4, 10), 25, queries.Slices(25, 0, 5, 10)),
])
def test_split_page_cuts_the_concatenation(page: Page, unstarted: int, expected: queries.Slices) -> None:
    assert queries.split_page(page, unstarted) == expected


def test_import_logs_query_without_filters_splits_on_started() -> None:
    query = queries.import_logs_query({})
    assert query.unstarted == {"startedAt": None}
    assert query.started == {"startedAt": {"$ne": None}}


def test_import_logs_query_with_every_filter() -> None:
    query = queries.import_logs_query({"status": "running,pending", "source": "https://a/feed", "since": "2025-01-06T10:00:00Z"})
    since = datetime(2025, 1, 6, 10, tzinfo=UTC)
    assert query.unstarted == {"status": {"$in": ["running", "pending"]}, "sourceUrl": "https://a/feed",
                               "startedAt": None, "requestedAt": {"$gte": since}}
    assert query.started == {"status": {"$in": ["running", "pending"]}, "sourceUrl": "https://a/feed",
                             "startedAt": {"$gte": since}}


@pytest.mark.parametrize(("raw", "expected"), [
    ("2025-01-06", datetime(2025, 1, 6, tzinfo=UTC)),
    ("2025-01-06T10:00:00", datetime(2025, 1, 6, 10, tzinfo=UTC)),
    ("2025-01-06T12:00:00+02:00", datetime(2025, 1, 6, 10, tzinfo=UTC)),
    ("2025-01-06T10:00:00.250Z", datetime(2025, 1, 6, 10, 0, 0, 250000, tzinfo=UTC)),
])
def test_since_accepts_iso_dates_and_times(raw: str, expected: datetime) -> None:
    assert queries.parse_since(raw) == expected


@pytest.mark.parametrize("query", [{"status": "done"}, {"status": "running,nope"}, {"status": ","},
                                   {"since": "yesterday"}, {"since": "2025-13-01"}, {"source": "x" * 2001}])
def test_import_logs_query_rejects_bad_filters(query: dict[str, str]) -> None:
    assert status_of(queries.import_logs_query, query) == 400


def test_jobs_filter_escapes_user_text() -> None:
    conditions = queries.jobs_filter({"q": "C++ (Senior)", "company": "Acme.io", "source": "https://a/f"})
    assert conditions["$or"] == [{"title": {"$regex": r"C\+\+\ \(Senior\)", "$options": "i"}},
                                 {"company": {"$regex": r"C\+\+\ \(Senior\)", "$options": "i"}}]
    assert conditions["company"] == {"$regex": r"^Acme\.io$", "$options": "i"}
    assert conditions["sourceUrl"] == "https://a/f"
    assert queries.jobs_filter({"q": "  "}) == {}


@pytest.mark.parametrize(("body", "expected"), [
    ({"url": "https://example.com/feed"}, FeedEntry("https://example.com/feed", "example.com", True)),
    ({"url": " https://example.com/feed ", "name": "Ex", "enabled": False}, FeedEntry("https://example.com/feed", "Ex", False)),
])
def test_new_feed_accepts_url_name_enabled(body: Any, expected: FeedEntry) -> None:
    assert queries.new_feed(body) == expected


@pytest.mark.parametrize("body", [None, [], "https://x/y", {}, {"url": "ftp://x/y"}, {"url": "https://x", "enabled": "yes"},
                                  {"url": "https://x", "name": 3}, {"url": "https://x", "color": "red"}])
def test_new_feed_rejects_bad_bodies(body: Any) -> None:
    assert status_of(queries.new_feed, body) == 400


def test_feed_changes() -> None:
    assert queries.feed_changes({"enabled": False}) == {"enabled": False}
    assert queries.feed_changes({"enabled": True, "name": " New "}) == {"enabled": True, "name": "New"}


@pytest.mark.parametrize("body", [None, {}, {"enabled": "false"}, {"enabled": 0}, {"name": ""}, {"url": "https://x"}, [True]])
def test_feed_changes_rejects_bad_bodies(body: Any) -> None:
    assert status_of(queries.feed_changes, body) == 400


@pytest.mark.parametrize(("body", "expected"), [
    (None, None),
    ({}, None),
    ({"feeds": None}, None),
    ({"feeds": ["https://a/x", "https://b/y", "https://a/x"]}, ["https://a/x", "https://b/y"]),
])
def test_requested_urls(body: Any, expected: list[str] | None) -> None:
    assert queries.requested_urls(body) == expected


@pytest.mark.parametrize("body", [{"feeds": []}, {"feeds": "https://a/x"}, {"feeds": ["mailto:x@y"]}, {"feeds": [1]},
                                  {"feed": ["https://a/x"]}, ["https://a/x"], "go"])
def test_requested_urls_rejects_bad_bodies(body: Any) -> None:
    assert status_of(queries.requested_urls, body) == 400


def test_run_entries_names_known_feeds_from_the_registry() -> None:
    entries = queries.run_entries(["https://a/x", "https://b.example/y"], {"https://a/x": {"url": "https://a/x", "name": "A"}})
    assert entries == [FeedEntry("https://a/x", "A"), FeedEntry("https://b.example/y", "b.example")]


@pytest.mark.parametrize("raw", ["", "xyz", "0123456789abcdef0123456", "0123456789abcdef012345678", "g123456789abcdef01234567"])
def test_object_id_must_be_24_hex(raw: str) -> None:
    assert status_of(queries.parse_object_id, raw) == 400


def test_to_json_renders_datetimes_with_z_and_drops_mongo_ids() -> None:
    oid = ObjectId()
    doc = {"_id": oid, "at": datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC), "naive": datetime(2025, 1, 6),
           "nested": [{"_id": 1, "ref": oid}], "n": 3}
    assert queries.to_json(doc) == {"at": "2025-01-06T10:00:00.123000Z", "naive": "2025-01-06T00:00:00Z",
                                    "nested": [{"ref": str(oid)}], "n": 3}
    assert queries.feed_json({"_id": oid, "url": "u"}) == {"id": str(oid), "url": "u"}


# --- the SSE hub -----------------------------------------------------------------------------------


def never() -> None:
    raise AssertionError("dropped unexpectedly")


def test_fresh_client_gets_no_replay_and_resuming_client_gets_what_it_missed() -> None:
    hub = LogHub(ring_size=10, boot="b1")
    first = hub.publish({"runId": "r1", "status": "pending"})
    assert first.id == "b1-1"
    _, fresh = hub.subscribe(None, never)
    assert fresh.events == [] and not fresh.resync
    hub.publish({"runId": "r1", "status": "running"})
    hub.publish({"runId": "r2", "status": "pending"})
    _, replay = hub.subscribe("b1-1", never)
    assert [e.id for e in replay.events] == ["b1-2", "b1-3"] and not replay.resync
    assert snapshot_from(replay.events[0].data.encode()) == {"runId": "r1", "status": "running"}
    _, caught_up = hub.subscribe("b1-3", never)
    assert caught_up.events == [] and not caught_up.resync


@pytest.mark.parametrize("last_id", ["other-2", "b1-99", "b1-x", "garbage", "b1-1"])
def test_unknown_or_expired_event_ids_ask_for_a_resync(last_id: str) -> None:
    hub = LogHub(ring_size=3, boot="b1")
    for n in range(6):  # the ring keeps b1-4..b1-6; resuming after b1-3 is still exact, after b1-1 is not
        hub.publish({"runId": f"r{n}"})
    _, replay = hub.subscribe(last_id, never)
    assert replay.resync and replay.events == []
    _, exact = hub.subscribe("b1-3", never)
    assert [e.id for e in exact.events] == ["b1-4", "b1-5", "b1-6"]


async def test_live_events_reach_every_subscriber_in_order() -> None:
    hub = LogHub(boot="b1")
    one, _ = hub.subscribe(None, never)
    two, _ = hub.subscribe(None, never)
    hub.publish({"runId": "a"})
    hub.publish({"runId": "b"})
    for subscription in (one, two):
        got = [await asyncio.wait_for(subscription.queue.get(), 1) for _ in range(2)]
        assert [e.run_id for e in got] == ["a", "b"]
    hub.unsubscribe(one)
    hub.publish({"runId": "c"})
    assert one.queue.empty() and two.queue.qsize() == 1


def test_a_client_that_does_not_keep_up_is_dropped_and_memory_stays_bounded() -> None:
    dropped: list[str] = []
    counted: list[int] = []
    hub = LogHub(ring_size=5, queue_size=3, boot="b1", on_dropped=lambda: counted.append(1))
    slow, _ = hub.subscribe(None, lambda: dropped.append("slow"))
    for n in range(20):
        hub.publish({"runId": f"r{n}"})
    assert dropped == ["slow"] and counted == [1] and slow.dropped
    assert slow.queue.qsize() == 3 and slow not in hub.subscribers
    assert len(hub.ring) == 5


@pytest.mark.parametrize("value", [None, b"not json", b"[1, 2]", b'{"status": "running"}', b"\xff\xfe"])
def test_malformed_import_log_records_are_skipped(value: bytes | None) -> None:
    assert snapshot_from(value) is None
