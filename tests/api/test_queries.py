"""Pure input handling of the API (no server): every rule that turns a query or body into a filter or a 400."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from api import models, queries
from api.events import LogHub, snapshot_from
from api.queries import JOBS_ORDER, RUNS_ORDER, ApiError, Document, Order, Page, Position
from models.registry import FeedEntry, RegistryError, validate_url

# The API's models (api.models) as its handlers use them.
QUERIES: dict[Order, type[models.ListQuery]] = {JOBS_ORDER: models.JobsQuery, RUNS_ORDER: models.ImportLogsQuery}


def parse_page(query: dict[str, str], order: Order) -> Page:
    return QUERIES[order].of(query).paging


def import_logs_filter(query: dict[str, str]) -> Document:
    return models.ImportLogsQuery.of(query).conditions()


def jobs_filter(query: dict[str, str]) -> Document:
    return models.JobsQuery.of(query).conditions()


def new_feed(body: Any) -> FeedEntry:
    return models.validated(models.NewFeed, body).entry()


def feed_changes(body: Any) -> Document:
    return models.validated(models.FeedChange, body).changes()


def requested_urls(body: Any) -> list[str] | None:
    return None if body is None else models.validated(models.RunRequest, body).urls()


def message_of(call: Any, *args: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value.message


def status_of(call: Any, *args: Any) -> int:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value.status


@pytest.mark.parametrize(("query", "expected"), [
    ({}, Page(1, 50)),
    ({"page": "3", "limit": "10"}, Page(3, 10)),
    ({"page": " 2 ", "limit": "200"}, Page(2, 200)),
    ({"page": "", "limit": ""}, Page(1, 50)),
    ({"page": "1000", "limit": "2", "total": "1"}, Page(1000, 2, total=True)),
    ({"page": "41", "limit": "50", "total": "false"}, Page(41, 50)),
])
def test_page_parses_valid_values(query: dict[str, str], expected: Page) -> None:
    assert parse_page(query, JOBS_ORDER) == expected


@pytest.mark.parametrize("query", [
    {"page": "0"}, {"page": "-1"}, {"page": "x"}, {"page": "1.5"}, {"limit": "0"}, {"limit": "201"}, {"limit": "ten"},
    {"page": "--1"}, {"page": "999999999999999999"}, {"page": "9" * 5000}, {"page": "1001", "limit": "1"},
    {"page": "42", "limit": "50"}, {"total": "yes please"}, {"after": "%%%"}, {"page": "2", "after": "W10"},
])
def test_page_rejects_bad_values_with_400(query: dict[str, str]) -> None:
    assert status_of(parse_page, query, JOBS_ORDER) == 400


def test_page_skip_is_by_number_and_zero_after_a_cursor() -> None:
    assert Page(3, 20).skip == 40
    assert Page(3, 20, Position(None, "k")).skip == 0


AT = datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(("order", "row", "position"), [
    (JOBS_ORDER, {"_id": "abc", "publishedAt": AT}, Position(AT, "abc")),
    (JOBS_ORDER, {"_id": "abc", "publishedAt": None}, Position(None, "abc")),
    (JOBS_ORDER, {"_id": "abc"}, Position(None, "abc")),
    (RUNS_ORDER, {"runId": "r-1", "requestedAt": AT}, Position(AT, "r-1")),
])
def test_cursor_round_trip(order: queries.Order, row: dict[str, Any], position: Position) -> None:
    cursor = queries.encode_cursor(order, 7, row)
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe as is
    assert parse_page({"after": cursor, "limit": "20"}, order) == Page(7, 20, position)


def test_a_cursor_is_refused_by_another_list_and_when_tampered_with() -> None:
    cursor = queries.encode_cursor(RUNS_ORDER, 2, {"runId": "r-1", "requestedAt": AT})
    assert status_of(queries.decode_cursor, JOBS_ORDER, cursor) == 400
    for raw in (["jobs", 1, None, "k"], ["jobs", "2", None, "k"], ["jobs", 2, "not a date", "k"], ["jobs", 2, None, ""],
                ["jobs", 2, 5, "k"], ["jobs", 2, None], {"page": 2}):
        forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()
        assert status_of(queries.decode_cursor, JOBS_ORDER, forged) == 400, raw


def test_keyset_filters_without_cursor_are_the_filter_itself() -> None:
    assert queries.keyset_filters({"sourceUrl": "s"}, JOBS_ORDER, None) == [{"sourceUrl": "s"}]


def test_keyset_filters_after_a_dated_row_are_a_range_then_the_undated_tail() -> None:
    """Top-level conditions only: a range on the sort field, the tie-break as a residual $or, nulls apart."""
    filters = queries.keyset_filters({"sourceUrl": "s"}, JOBS_ORDER, Position(AT, "k5"))
    assert filters == [
        {"sourceUrl": "s", "publishedAt": {"$lte": AT}, "$or": [{"publishedAt": {"$lt": AT}}, {"_id": {"$gt": "k5"}}]},
        {"sourceUrl": "s", "publishedAt": None},
    ]


def test_keyset_filters_after_an_undated_row_stay_in_the_tail() -> None:
    assert queries.keyset_filters({}, JOBS_ORDER, Position(None, "k5")) == [{"publishedAt": None, "_id": {"$gt": "k5"}}]
    assert queries.keyset_filters({}, RUNS_ORDER, Position(None, "r5")) == [{"requestedAt": None, "runId": {"$lt": "r5"}}]


def test_keyset_filters_merge_a_since_range_and_skip_the_null_tail_it_excludes() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    base = {"status": "failed", "requestedAt": {"$gte": since}}
    assert queries.keyset_filters(base, RUNS_ORDER, Position(AT, "r5")) == [
        {"status": "failed", "requestedAt": {"$gte": since, "$lte": AT},
         "$or": [{"requestedAt": {"$lt": AT}}, {"runId": {"$lt": "r5"}}]},
    ]
    assert queries.keyset_filters(base, RUNS_ORDER, Position(None, "r5")) == []


def test_cut_page_keeps_limit_rows_and_points_the_cursor_at_the_last() -> None:
    rows = [{"_id": f"k{n}", "publishedAt": AT} for n in range(4)]
    items, after = queries.cut_page(JOBS_ORDER, Page(2, 3), rows)
    assert items == rows[:3] and after is not None
    assert queries.decode_cursor(JOBS_ORDER, after) == (3, Position(AT, "k2"))
    assert queries.cut_page(JOBS_ORDER, Page(2, 3), rows[:3]) == (rows[:3], None)
    assert queries.cut_page(JOBS_ORDER, Page(1, 3), []) == ([], None)


def test_import_logs_filter_without_filters_is_empty() -> None:
    assert import_logs_filter({}) == {}


def test_import_logs_filter_with_every_filter() -> None:
    conditions = import_logs_filter({"status": "running,pending", "source": "https://a/feed",
                                             "since": "2025-01-06T10:00:00Z"})
    since = datetime(2025, 1, 6, 10, tzinfo=UTC)
    assert conditions == {"status": {"$in": ["running", "pending"]}, "sourceUrl": "https://a/feed",
                          "requestedAt": {"$gte": since}}
    assert import_logs_filter({"status": "failed"}) == {"status": "failed"}


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
def test_import_logs_filter_rejects_bad_filters(query: dict[str, str]) -> None:
    assert status_of(import_logs_filter, query) == 400


def test_jobs_filter_of_plain_lists_and_blank_text() -> None:
    assert jobs_filter({}) == {}
    assert jobs_filter({"source": "https://a/f", "q": "  "}) == {"sourceUrl": "https://a/f"}


def test_jobs_query_casefolds_and_escapes_user_text() -> None:
    """job_search holds casefolded text: a plain case-sensitive regex of the escaped, casefolded literal, no options."""
    conditions = jobs_filter({"q": "C++ (Senior) STRASSE", "company": " Acme.io ", "source": "https://a/f"})
    assert conditions == {"sourceUrl": "https://a/f", "company": "acme.io",
                            "text": {"$regex": r"c\+\+\ \(senior\)\ strasse"}}
    assert jobs_filter({"company": "Straße"}) == {"company": "strasse"}


@pytest.mark.parametrize("text", ["c++ (senior)", "node.js/react @ acme, inc.", '50% remote: "yes"', "müller straße",
                                  "a\\b", "tab\there", "[x]{2}$^|?*#&~-", "o’reilly – 5€", "snake_case"])
def test_literal_regex_matches_exactly_the_text(text: str) -> None:
    pattern = queries.literal_regex(text)
    assert re.fullmatch(pattern, text) and re.search(pattern, f"<{text}>")
    assert not re.search(pattern, text[:-1])
    # the shape the store serves as a substring test: letters, digits, _ and non-ASCII bare; ASCII punctuation escaped
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            escaped = pattern[position + 1]
            assert escaped.isascii() and not escaped.isalnum() and escaped != "_", pattern
            position += 2
        else:
            assert char.isalnum() or char == "_" or not char.isascii(), pattern
            position += 1


@pytest.mark.parametrize(("body", "expected"), [
    ({"url": "https://example.com/feed"}, FeedEntry("https://example.com/feed", "example.com", True)),
    ({"url": " https://example.com/feed ", "name": "Ex", "enabled": False}, FeedEntry("https://example.com/feed", "Ex", False)),
])
def test_new_feed_accepts_url_name_enabled(body: Any, expected: FeedEntry) -> None:
    assert new_feed(body) == expected


@pytest.mark.parametrize("body", [None, [], "https://x/y", {}, {"url": "ftp://x/y"}, {"url": "https://x", "enabled": "yes"},
                                  {"url": "https://x", "name": 3}, {"url": "https://x", "color": "red"}])
def test_new_feed_rejects_bad_bodies(body: Any) -> None:
    assert status_of(new_feed, body) == 400


def test_feed_changes() -> None:
    assert feed_changes({"enabled": False}) == {"enabled": False}
    assert feed_changes({"enabled": True, "name": " New "}) == {"enabled": True, "name": "New"}


@pytest.mark.parametrize("body", [None, {}, {"enabled": "false"}, {"enabled": 0}, {"name": ""}, {"url": "https://x"}, [True]])
def test_feed_changes_rejects_bad_bodies(body: Any) -> None:
    assert status_of(feed_changes, body) == 400


@pytest.mark.parametrize(("body", "expected"), [
    (None, None),
    ({}, None),
    ({"feeds": None}, None),
    ({"feeds": ["https://a/x", "https://b/y", "https://a/x"]}, ["https://a/x", "https://b/y"]),
])
def test_requested_urls(body: Any, expected: list[str] | None) -> None:
    assert requested_urls(body) == expected


@pytest.mark.parametrize("body", [{"feeds": []}, {"feeds": "https://a/x"}, {"feeds": ["mailto:x@y"]}, {"feeds": [1]},
                                  {"feed": ["https://a/x"]}, ["https://a/x"], "go"])
def test_requested_urls_rejects_bad_bodies(body: Any) -> None:
    assert status_of(requested_urls, body) == 400


def test_requested_urls_takes_at_most_100_and_dedupes_in_one_pass() -> None:
    hundred = [f"https://h{n}.example/feed" for n in range(100)]
    assert requested_urls({"feeds": hundred}) == hundred
    error = pytest.raises(ApiError, requested_urls, {"feeds": [*hundred, "https://h100.example/feed"]}).value
    assert error.status == 400 and "at most 100" in error.message


def test_requested_urls_counts_duplicates_against_the_cap() -> None:
    """The cap is on what the client sent, before deduplication: 101 copies of one URL are still 101 URLs."""
    assert status_of(requested_urls, {"feeds": ["https://a.example/x"] * 101}) == 400


def test_dedupe_of_a_full_body_is_linear() -> None:
    """The old ``url not in urls`` list scan took 44 s on a 1 MiB body; 100 distinct URLs now cost microseconds."""
    body = {"feeds": [f"https://h{n}.example/{'x' * 500}" for n in range(100)]}
    started = time.perf_counter()
    for _ in range(100):
        requested_urls(body)
    assert time.perf_counter() - started < 1.0


def test_only_registered_feeds_run_without_the_token() -> None:
    registry = {"https://a/x": {"url": "https://a/x", "name": "A"}}
    queries.require_registered(["https://a/x"], registry, allowed_unregistered=False)
    error = pytest.raises(ApiError, queries.require_registered, ["https://a/x", "https://b/y"], registry, False).value
    assert error.status == 403 and "https://b/y" in error.message and "API_TOKEN" in error.message
    queries.require_registered(["https://b/y"], registry, allowed_unregistered=True)


def test_plan_runs_skips_busy_feeds_and_names_known_ones_from_the_registry() -> None:
    registry = {"https://a/x": {"url": "https://a/x", "name": "A"}}
    urls = ["https://a/x", "https://b.example/y", "https://c/z", "https://d/w"]
    plan = queries.plan_runs(urls, registry, running={"https://c/z"}, requested={"https://d/w"})
    assert plan.entries == [FeedEntry("https://a/x", "A"), FeedEntry("https://b.example/y", "b.example")]
    assert plan.skipped == [{"sourceUrl": "https://c/z", "reason": "already running"},
                            {"sourceUrl": "https://d/w", "reason": "already requested"}]


@pytest.mark.parametrize("url", [
    "https://example.com/feed\nINFO forged line", "https://example.com/\rfeed", "https://exa\x00mple.com/",
    "https://example.com/\x1b[31m", "https://example.com/\x7f", "https://example.com/\x85x", "https://example.com/\u2028x",
    "https://example.com/\u202eexe.xml", "https://example.com/\u200bfeed", "http://[::1/feed", "http://example.com:99999/",
    "http://example.com:0/", "http://:80/feed", "https://example.com/" + "a" * 2000,
])
def test_urls_with_control_characters_or_no_valid_host_are_refused(url: str) -> None:
    with pytest.raises(RegistryError):
        validate_url(url)
    assert status_of(requested_urls, {"feeds": [url]}) == 400
    assert status_of(new_feed, {"url": url}) == 400


def test_a_url_with_surrounding_whitespace_is_trimmed_not_refused() -> None:
    assert validate_url("  https://example.com/feed\n") == "https://example.com/feed"


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "\u202eevil", "x" * 201, "   "])
def test_feed_names_are_one_line(name: str) -> None:
    assert status_of(feed_changes, {"name": name}) == 400
    if name.strip():
        assert status_of(new_feed, {"url": "https://example.com/x", "name": name}) == 400


@pytest.mark.parametrize("raw", ["", "xyz", "0123456789abcdef0123456", "0123456789abcdef012345678", "g123456789abcdef01234567"])
def test_object_id_must_be_24_hex(raw: str) -> None:
    assert status_of(queries.parse_object_id, raw) == 400


def test_to_json_renders_datetimes_with_z_and_drops_mongo_ids() -> None:
    oid = ObjectId()
    doc = {"_id": oid, "at": datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC), "naive": datetime(2025, 1, 6),
           "nested": [{"_id": 1, "ref": oid}], "n": 3}
    assert queries.to_json(doc) == {"at": "2025-01-06T10:00:00.123000Z", "naive": "2025-01-06T00:00:00Z",
                                    "nested": [{"ref": str(oid)}], "n": 3}
    assert queries.feed_json({"_id": oid, "url": "u"}) == {"id": str(oid), "url": "u", "format": "auto", "mapping": None}


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
