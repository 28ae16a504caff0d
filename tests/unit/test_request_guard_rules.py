"""The pure rules of issue 22's request guards: settings, Host names, sessions, buckets, stream slots, resume ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from api.events import LogHub, StreamSlots
from api.guards import (
    cookie_value,
    host_allowed,
    read_needs_token,
    session_valid,
    session_value,
    split_host,
    token_matches,
)
from api.lastruns import LastRuns, latest_runs_pipeline
from api.limits import TokenBuckets
from api.openapi import openapi_document
from streams.settings import Settings, SettingsError

EVERYWHERE = "0.0.0.0"  # noqa: S104 - an API served beyond loopback
TOKEN = "s3cret-token"  # noqa: S105 - a test token


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- settings ------------------------------------------------------------------------------------------


def test_the_new_settings_have_safe_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.api_reads_require_token is False and settings.allowed_hosts == ()
    assert settings.max_sse_clients == 100 and settings.max_feeds == 10_000


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False),
                                            ("false", False), ("No", False), ("off", False)])
def test_booleans_take_the_usual_words(raw: str, value: bool) -> None:
    assert Settings.from_env({"API_TOKEN": TOKEN, "API_READS_REQUIRE_TOKEN": raw}).api_reads_require_token is value


@pytest.mark.parametrize("raw", ["ture", "enabled", "2", "y"])
def test_a_mistyped_boolean_is_an_error_not_false(raw: str) -> None:
    """A typo must not silently leave reads open (or any other switch in its default)."""
    with pytest.raises(SettingsError, match="API_READS_REQUIRE_TOKEN must be one of 1, true"):
        Settings.from_env({"API_TOKEN": TOKEN, "API_READS_REQUIRE_TOKEN": raw})


def test_reads_cannot_require_a_token_that_is_not_set() -> None:
    with pytest.raises(SettingsError, match="API_READS_REQUIRE_TOKEN is on but API_TOKEN is not set"):
        Settings.from_env({"API_READS_REQUIRE_TOKEN": "true"})


def test_allowed_hosts_are_a_list_of_names() -> None:
    settings = Settings.from_env({"API_ALLOWED_HOSTS": " Jobs.Example.org. , *.corp.example,10.0.0.1,[::1],api "})
    assert settings.allowed_hosts == ("jobs.example.org", "*.corp.example", "10.0.0.1", "[::1]", "api")


@pytest.mark.parametrize("entry", ["http://jobs.example.org", "jobs.example.org:8080", "jobs.example.org/x", "a..b",
                                   "jöbs.example", "*"])
def test_allowed_hosts_refuse_what_could_never_match(entry: str) -> None:
    if entry == "*":  # the explicit "any host" (e.g. behind a proxy that checks Host itself) is allowed
        assert Settings.from_env({"API_ALLOWED_HOSTS": entry}).allowed_hosts == ("*",)
        return
    with pytest.raises(SettingsError, match="API_ALLOWED_HOSTS entries must be host names"):
        Settings.from_env({"API_ALLOWED_HOSTS": entry})


@pytest.mark.parametrize("name", ["MAX_SSE_CLIENTS", "MAX_FEEDS"])
def test_caps_must_be_positive(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be > 0"):
        Settings.from_env({name: "0"})


# --- Host names ----------------------------------------------------------------------------------------

ALLOWED = ("jobs.example.org", "*.corp.example")


@pytest.mark.parametrize(("host", "api_host", "allowed"), [
    ("jobs.example.org", EVERYWHERE, True), ("JOBS.example.org.:443", EVERYWHERE, True),
    ("dash.corp.example", EVERYWHERE, True), ("corp.example", EVERYWHERE, False),
    ("evil.example", EVERYWHERE, False), ("jobs.example.org.evil.example", EVERYWHERE, False),
    ("10.1.2.3:8080", EVERYWHERE, True), ("[fd00::5]:8080", EVERYWHERE, True), ("localhost:8080", EVERYWHERE, True),
    # a loopback API keeps today's rule (loopback names and API_HOST), plus the listed names
    ("jobs.example.org", "127.0.0.1", True), ("10.1.2.3", "127.0.0.1", False), ("evil.example", "127.0.0.1", False),
    ("127.0.0.1:8080", "127.0.0.1", True),
])
def test_host_names_served(host: str, api_host: str, allowed: bool) -> None:
    assert host_allowed(host, api_host, ALLOWED) is allowed


def test_without_allowed_hosts_an_exposed_api_serves_only_addresses_and_loopback_names() -> None:
    assert not host_allowed("jobs.example.org", EVERYWHERE)
    assert host_allowed("192.168.1.10:8080", EVERYWHERE) and host_allowed("localhost", EVERYWHERE)
    assert host_allowed("anything.example", EVERYWHERE, ("*",))


@pytest.mark.parametrize("host", ["127.0.0.1\udcff\udcfe", "\udcc3\udca9vil.example", "jöbs.example", "", "a b"])
def test_a_host_with_bytes_that_are_not_ascii_is_not_a_host(host: str) -> None:
    assert split_host(host) is None and not host_allowed(host, EVERYWHERE, ("*",))


# --- token, session cookie -----------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "matches"), [(TOKEN, True), ("", False), ("s3cret", False), ("\udcff", False),
                                                  ("s3cret-tokén", False)])
def test_token_compare_never_raises(offered: str, matches: bool) -> None:
    assert token_matches(offered, TOKEN) is matches
    assert token_matches(offered, "") is False


def test_a_session_is_valid_until_it_expires_and_only_for_its_token() -> None:
    value = session_value(TOKEN, 2000)
    assert TOKEN not in value
    assert session_valid(value, TOKEN, 1999.0)
    assert not session_valid(value, TOKEN, 2000.0)  # expired
    assert not session_valid(value, "another-token", 1000.0)  # API_TOKEN changed: every session ends
    assert not session_valid(session_value(TOKEN, 2000).replace("v1.2000", "v1.9000"), TOKEN, 1000.0)  # expiry forged
    assert not session_valid(value[:-1] + ("0" if value[-1] != "0" else "1"), TOKEN, 1000.0)


@pytest.mark.parametrize("value", ["", "v1", "v1..", "v2.2000.abc", "v1.²000.abc", "v1.\udcff.abc", "v1." + "9" * 5000,
                                   "v1.2000." + "é" * 64, TOKEN])
def test_malformed_sessions_are_refused_without_an_exception(value: str) -> None:
    assert session_valid(value, TOKEN, 1000.0) is False


@pytest.mark.parametrize(("header", "value"), [
    ("jobstream_session=abc", "abc"), ("a=1; jobstream_session=\"abc\"; b=2", "abc"), ("a=1", None), ("", None),
    ("jobstream_session", None), ("x=\udcff; jobstream_session=\udcfe", "\udcfe"),
])
def test_the_session_cookie_is_read_from_any_cookie_header(header: str, value: str | None) -> None:
    assert cookie_value(header, "jobstream_session") == value


@pytest.mark.parametrize(("path", "needs"), [
    ("/api/feeds", True), ("/api/import-logs/stream", True), ("/api/jobs/abc", True), ("/api/nope", True),
    ("/health", False), ("/metrics", False), ("/api/openapi.json", False), ("/api/session", False), ("/", False),
    ("/static/js/main.js", False),
])
def test_which_reads_need_the_token(path: str, needs: bool) -> None:
    assert read_needs_token(path) is needs


# --- rate limits ---------------------------------------------------------------------------------------


def test_a_request_is_charged_to_its_address_and_its_token() -> None:
    buckets = TokenBuckets(2, 0.5, FakeClock())
    assert buckets.take("address a", "token") == 0.0
    assert buckets.take("address b", "token") == 0.0
    assert buckets.take("address c", "token") > 0  # the token's budget is spent, whichever address asks
    assert buckets.take("address c") == 0.0  # the refusal spent nothing of address c's own budget
    assert buckets.take("address c") == 0.0 and buckets.take("address c") > 0


# --- SSE -------------------------------------------------------------------------------------------------


def test_stream_slots_are_capped_and_given_back() -> None:
    slots = StreamSlots(2)
    assert slots.acquire() and slots.acquire() and not slots.acquire()
    slots.release()
    assert slots.acquire() and not slots.acquire()
    for _ in range(5):
        slots.release()
    assert slots.open == 0


@pytest.mark.parametrize("seq", ["²", "١", "9" * 5000, "1" * 19, "-1", "+1", " 1"])
def test_a_last_event_id_int_would_refuse_asks_for_a_resync(seq: str) -> None:
    hub = LogHub(boot="b00t")
    hub.publish({"runId": "r1"})
    assert hub.replay_after(f"b00t-{seq}").resync is True


# --- latest runs -------------------------------------------------------------------------------------------


class FakeLogs:
    """An ``import_logs`` collection that may lack ``$first`` (as FerretDB 1.24 does)."""

    def __init__(self, runs: list[dict[str, Any]], grouping: bool) -> None:
        self.runs = runs
        self.grouping = grouping
        self.commands: list[str] = []

    async def aggregate(self, pipeline: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        self.commands.append("aggregate")
        if not self.grouping:
            raise OperationFailure('$group accumulator "$first" is not implemented yet', 238)
        assert pipeline == latest_runs_pipeline()
        newest: dict[str, dict[str, Any]] = {}
        for run in sorted(self.runs, key=lambda r: (r["requestedAt"], r["runId"]), reverse=True):
            newest.setdefault(run["sourceUrl"], {"_id": run["sourceUrl"], **run})

        async def rows() -> AsyncIterator[dict[str, Any]]:
            for row in newest.values():
                yield row

        return rows()

    async def find_one(self, query: dict[str, Any], projection: dict[str, Any], sort: Any) -> dict[str, Any] | None:
        self.commands.append("find_one")
        mine = [r for r in self.runs if r["sourceUrl"] == query["sourceUrl"]]
        return max(mine, key=lambda r: (r["requestedAt"], r["runId"]), default=None)


RUNS = [{"runId": "r1", "sourceUrl": "a", "requestedAt": 1, "status": "completed"},
        {"runId": "r2", "sourceUrl": "a", "requestedAt": 2, "status": "failed"},
        {"runId": "r3", "sourceUrl": "b", "requestedAt": 1, "status": "running"},
        {"runId": "r4", "sourceUrl": "gone", "requestedAt": 5, "status": "completed"}]


async def test_latest_runs_take_one_query_where_the_store_groups() -> None:
    logs = FakeLogs(RUNS, grouping=True)
    last_runs = LastRuns()
    for _ in range(2):
        latest = await last_runs.of(logs, ["a", "b", "c"])  # type: ignore[arg-type]
        assert {url: run["runId"] for url, run in latest.items()} == {"a": "r2", "b": "r3"}
    assert logs.commands == ["aggregate", "aggregate"]


async def test_latest_runs_fall_back_once_on_a_store_without_first() -> None:
    logs = FakeLogs(RUNS, grouping=False)
    last_runs = LastRuns()
    for _ in range(2):
        latest = await last_runs.of(logs, ["a", "b", "c"])  # type: ignore[arg-type]
        assert {url: run["runId"] for url, run in latest.items()} == {"a": "r2", "b": "r3"}
    assert logs.commands == ["aggregate"] + ["find_one"] * 6  # refused once, then remembered


# --- the OpenAPI document ----------------------------------------------------------------------------------


def test_the_openapi_document_describes_the_new_guards() -> None:
    paths = openapi_document()["paths"]
    assert {"post", "delete"} <= set(paths["/api/session"])
    assert "503" in paths["/api/import-logs/stream"]["get"]["responses"]
    assert "409" in paths["/api/feeds"]["post"]["responses"]
    for path in ("/api/feeds", "/api/jobs", "/api/import-logs/stream"):
        responses = paths[path]["get"]["responses"]
        assert {"401", "429", "421", "400"} <= set(responses), path
    for path in ("/health", "/metrics"):
        assert not {"401", "429"} & set(paths[path]["get"]["responses"]), path
