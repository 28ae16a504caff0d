"""Hostile requests (issue 8): cross-site writes, DNS rebinding, non-JSON bodies, floods, busy feeds, leaky errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from api.app import create_app
from api.guards import (
    MAX_BODY_BYTES,
    cross_site_reason,
    exposure_problem,
    host_allowed,
    is_loopback,
    same_origin,
    unacceptable_body,
)
from api.limits import RunClaims, TokenBuckets
from streams.settings import Settings, SettingsError
from tests.api.conftest import MakeApi
from tests.api.support import ApiHarness, commands_watch, fast_options, next_commands, run_doc, stored
from tests.api.test_http_api import new_url
from tests.support import ROOT, free_port, mongo_db

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
EVERYWHERE = "0.0.0.0"  # noqa: S104 - the address these tests want refused or guarded


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def commands_during(api: ApiHarness, actions: Callable[[], Awaitable[Any]], quiet: float = 1.5) -> list[Any]:
    """The commands published while ``actions`` ran and for ``quiet`` seconds after (to see that none came)."""
    async with commands_watch(api.settings) as consumer:
        await actions()
        commands: list[Any] = []
        deadline = asyncio.get_running_loop().time() + quiet
        while asyncio.get_running_loop().time() < deadline:
            commands += await next_commands(consumer, 250)
        return commands


# --- pure rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("api.localhost", True), ("::ffff:127.0.0.1", True), (EVERYWHERE, False), ("::", False),
    ("", False), ("10.0.0.5", False), ("example.com", False), ("localhost.example.com", False), ("0x7f000001", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_needs_a_token_beyond_loopback() -> None:
    assert exposure_problem(Settings(api_host="127.0.0.1")) is None
    assert exposure_problem(Settings(api_host="localhost")) is None
    assert exposure_problem(Settings(api_host=EVERYWHERE, api_token=uuid.uuid4().hex)) is None
    for host in (EVERYWHERE, "::", "10.1.2.3", "jobs.internal"):
        problem = exposure_problem(Settings(api_host=host))
        assert problem is not None and "API_TOKEN" in problem and "API_HOST" in problem, host
    with pytest.raises(SettingsError, match="API_TOKEN"):
        create_app(Settings(api_host=EVERYWHERE))


@pytest.mark.parametrize(("host", "api_host", "allowed"), [
    ("127.0.0.1:8080", "127.0.0.1", True), ("localhost:8080", "127.0.0.1", True), ("[::1]:8080", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.1", True), ("evil.example:8080", "127.0.0.1", False), ("evil.example", "localhost", False),
    ("127.0.0.1.nip.io:8080", "127.0.0.1", False), ("", "127.0.0.1", False), ("a@127.0.0.1", "127.0.0.1", False),
    ("127.0.0.1:notaport", "127.0.0.1", False), ("anything.example", EVERYWHERE, False),
    ("10.1.2.3:8080", EVERYWHERE, True), ("10.1.2.3:8080", "127.0.0.1", False),
])
def test_a_loopback_api_serves_only_loopback_host_names(host: str, api_host: str, allowed: bool) -> None:
    assert host_allowed(host, api_host) is allowed


@pytest.mark.parametrize(("url", "host", "same"), [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True), ("http://127.0.0.1:8080/page?x", "127.0.0.1:8080", True),
    ("https://jobs.example", "jobs.example", True), ("http://jobs.example", "jobs.example:80", True),
    ("http://127.0.0.1:3000", "127.0.0.1:8080", False), ("http://localhost:8080", "127.0.0.1:8080", False),
    ("http://evil.example", "127.0.0.1:8080", False), ("null", "127.0.0.1:8080", False),
    ("file:///home/x.html", "127.0.0.1:8080", False), ("http://127.0.0.1:99999", "127.0.0.1:8080", False),
])
def test_same_origin_compares_host_and_port(url: str, host: str, same: bool) -> None:
    assert same_origin(url, host) is same


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),
    ({"Origin": "http://127.0.0.1:8080"}, False),
    ({"Origin": "http://evil.example"}, True),
    ({"Origin": "null"}, True),
    ({"Sec-Fetch-Site": "same-origin"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),  # e.g. another port of 127.0.0.1: another origin
    ({"Referer": "http://127.0.0.1:8080/"}, False),
    ({"Referer": "http://evil.example/attack.html"}, True),
    ({"Origin": "http://127.0.0.1:8080", "Referer": "http://evil.example/"}, False),  # Origin decides when present
])
def test_cross_site_changes_are_recognised(headers: dict[str, str], refused: bool) -> None:
    assert (cross_site_reason(headers, "127.0.0.1:8080") is not None) is refused


@pytest.mark.parametrize(("method", "content_type", "has_body", "refused"), [
    ("POST", "application/json", True, False), ("POST", "text/plain", True, True),
    ("POST", "application/x-www-form-urlencoded", True, True), ("POST", "", True, True),
    ("POST", "text/plain", False, True), ("POST", "multipart/form-data", False, True),
    ("POST", "application/octet-stream", False, False), ("POST", "", False, False), ("DELETE", "", False, False),
    ("GET", "text/plain", True, True), ("GET", "text/plain", False, False),
])
def test_bodies_must_be_json(method: str, content_type: str, has_body: bool, refused: bool) -> None:
    assert unacceptable_body(method, content_type, has_body) is refused


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(3, 0.5, clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(2.0)
    assert buckets.take("b") == 0.0  # per client
    clock.now += 2.0
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0


def test_token_buckets_are_bounded_in_number() -> None:
    buckets = TokenBuckets(1, 1.0, FakeClock(), max_clients=100)
    for n in range(1000):
        buckets.take(f"10.0.{n // 256}.{n % 256}")
    assert len(buckets._buckets) == 100


def test_run_claims_last_until_the_run_is_seen_or_the_ttl() -> None:
    clock = FakeClock()
    claims = RunClaims(60.0, clock)
    claims.claim(["a", "b"])
    claims.sent({"a": "run-a", "b": "run-b"})
    assert claims.claimed(["a", "b", "c"]) == {"a", "b"}
    assert claims.run_ids(["a", "c"]) == {"a": "run-a"}
    claims.seen({"a": "run-a"})
    assert claims.claimed(["a", "b"]) == {"b"}
    claims.seen({"b": "an-older-run"})  # a claim made again since is kept
    assert claims.claimed(["b"]) == {"b"}
    clock.now += 61
    assert claims.claimed(["b"]) == set()
    claims.claim(["c"])
    claims.release(["c"])
    assert claims.claimed(["c"]) == set()


# --- over HTTP: content type and size ----------------------------------------------------------------


async def test_a_text_plain_post_adds_no_feed_and_starts_no_import(api: ApiHarness) -> None:
    known, url = new_url("known"), new_url()
    await api.json("POST", "/api/feeds", 201, json={"url": known})

    async def simple_requests() -> None:
        for path, body in (("/api/feeds", f'{{"url": "{url}"}}'), ("/api/import/run", f'{{"feeds": ["{known}"]}}'),
                           ("/api/import/run", "")):
            for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"):
                error = await api.json("POST", path, 415, data=body, headers={"Content-Type": content_type})
                assert "application/json" in error["error"]

    assert await commands_during(api, simple_requests) == []
    assert mongo_db(api.env).feeds.count_documents({"url": url}) == 0
    # the same bodies as JSON are accepted (with a charset too)
    await api.json("POST", "/api/feeds", 201, data=f'{{"url": "{url}"}}',
                   headers={"Content-Type": "application/json; charset=utf-8"})
    await api.json("POST", "/api/import/run", 202, data=f'{{"feeds": ["{known}"]}}', headers=JSON)


async def test_patch_with_a_form_body_is_415(api: ApiHarness) -> None:
    feed = await api.json("POST", "/api/feeds", 201, json={"url": new_url()})
    await api.json("PATCH", f"/api/feeds/{feed['id']}", 415, data="enabled=false",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert mongo_db(api.env).feeds.find_one({"url": feed["url"]})["enabled"] is True  # type: ignore[index]


async def test_bodies_over_64_kib_are_413(api: ApiHarness) -> None:
    big = '{"feeds": ["https://example.com/' + "x" * MAX_BODY_BYTES + '"]}'
    error = await api.json("POST", "/api/import/run", 413, data=big, headers=JSON)
    assert str(MAX_BODY_BYTES) in error["error"]

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b" " * 8192

    await api.json("POST", "/api/feeds", 413, data=chunks(), headers=JSON)


@pytest.mark.parametrize("body", ["[" * 60_000, '{"feeds": [' + "1" * 10_000 + "]}"])
async def test_pathological_json_is_400_not_500(api: ApiHarness, body: str) -> None:
    error = await api.json("POST", "/api/import/run", 400, data=body, headers=JSON)
    assert "not valid JSON" in error["error"]


# --- over HTTP: origin and host ------------------------------------------------------------------------


async def test_changes_from_another_origin_are_403(api: ApiHarness) -> None:
    feed = await api.json("POST", "/api/feeds", 201, json={"url": new_url()})
    hostile = ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
               {"Referer": "http://evil.example/page.html"})
    added: list[str] = []

    async def cross_site_requests() -> None:
        for headers in hostile:
            url = new_url()
            added.append(url)
            error = await api.json("POST", "/api/feeds", 403, json={"url": url}, headers=headers)
            assert "cross-origin" in error["error"]
            await api.json("PATCH", f"/api/feeds/{feed['id']}", 403, json={"enabled": False}, headers=headers)
            await api.json("DELETE", f"/api/feeds/{feed['id']}", 403, headers=headers)
            await api.json("POST", "/api/import/run", 403, json={"feeds": [feed["url"]]}, headers=headers)
            await api.json("POST", "/api/import/run", 403, headers=headers)

    assert await commands_during(api, cross_site_requests) == []
    assert mongo_db(api.env).feeds.count_documents({"url": {"$in": added}}) == 0
    assert mongo_db(api.env).feeds.find_one({"url": feed["url"]})["enabled"] is True  # type: ignore[index]
    # reads are not changes; the API's own origin may change things
    await api.json("GET", "/api/feeds", 200, headers={"Origin": "http://evil.example"})
    own = {"Origin": api.base_url, "Sec-Fetch-Site": "same-origin", "Referer": api.base_url + "/"}
    await api.json("PATCH", f"/api/feeds/{feed['id']}", 200, json={"enabled": False}, headers=own)


async def test_a_loopback_api_answers_421_to_a_foreign_host_name(api: ApiHarness) -> None:
    port = api.base_url.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "attacker.example", f"127.0.0.1.evil.example:{port}"):
        error = await api.json("GET", "/api/jobs", 421, headers={"Host": host})
        assert "Host" in error["error"] and "evil" not in error["error"]
        await api.json("POST", "/api/feeds", 421, json={"url": new_url()}, headers={"Host": host})
        response = await api.client.get("/", headers={"Host": host})  # the dashboard too: it would run their script
        assert response.status == 421
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        await api.json("GET", "/api/jobs", 200, params={"limit": "1"}, headers={"Host": host})


async def test_an_api_served_beyond_loopback_takes_its_allowed_hosts_and_needs_the_token(make_api: MakeApi) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    exposed = await make_api(API_HOST=EVERYWHERE, API_TOKEN=token, API_ALLOWED_HOSTS="jobs.example.org,*.corp.example")
    for host in ("jobs.example.org", "jobs.example.org:8080", "dash.corp.example", "10.20.30.40:8080", "localhost"):
        await exposed.json("GET", "/api/feeds", 200, headers={"Host": host})
    await exposed.json("POST", "/api/feeds", 401, json={"url": new_url()}, headers={"Host": "jobs.example.org"})
    # a DNS-rebinding page names its own host: refused, on every route
    for host in ("evil.example", "jobs.example.org.evil.example", "corp.example"):
        error = await exposed.json("GET", "/api/feeds", 421, headers={"Host": host})
        assert "API_ALLOWED_HOSTS" in error["error"] and "evil" not in error["error"]
        assert (await exposed.client.get("/", headers={"Host": host})).status == 421


def test_the_api_refuses_to_start_on_a_public_address_without_a_token(shared_env: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, **shared_env, "API_HOST": EVERYWHERE, "API_PORT": str(port), "API_TOKEN": ""}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "api"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "API_HOST='0.0.0.0' is not a loopback address and API_TOKEN is not set" in done.stderr, done.stderr
    assert "API ready" not in done.stderr + done.stdout


# --- over HTTP: import runs ------------------------------------------------------------------------------


async def test_run_request_takes_at_most_100_urls(api: ApiHarness) -> None:
    urls = [new_url(f"f{n}") for n in range(101)]
    for url in urls[:3]:
        await api.json("POST", "/api/feeds", 201, json={"url": url})

    async def too_many() -> None:
        error = await api.json("POST", "/api/import/run", 400, json={"feeds": urls})
        assert "at most 100" in error["error"]
        await api.json("POST", "/api/import/run", 400, json={"feeds": urls[:3] * 34})  # 102 entries, 3 distinct

    assert await commands_during(api, too_many) == []


async def test_unregistered_urls_are_refused_without_the_token(api: ApiHarness) -> None:
    known, unknown = new_url("known"), new_url("unknown")
    await api.json("POST", "/api/feeds", 201, json={"url": known})

    async def unregistered() -> None:
        error = await api.json("POST", "/api/import/run", 403, json={"feeds": [known, unknown]})
        assert unknown in error["error"] and "API_TOKEN" in error["error"]

    assert await commands_during(api, unregistered) == []  # all or nothing: the known feed is not started either


async def test_a_busy_feed_is_not_started_twice(api: ApiHarness) -> None:
    pending, idle = new_url("pending"), new_url("idle")
    for url in (pending, idle):
        await api.json("POST", "/api/feeds", 201, json={"url": url})
    mongo_db(api.env).import_logs.insert_one(stored(run_doc(f"busy-{uuid.uuid4().hex}", pending, "pending", None)))

    answers: list[Any] = []

    async def twice() -> None:
        answers.append(await api.json("POST", "/api/import/run", 202, json={"feeds": [pending, idle]}))
        # at once again: import_logs does not show the new run yet (no worker here), the API remembers it asked
        answers.append(await api.json("POST", "/api/import/run", 202, json={"feeds": [idle]}))

    commands = await commands_during(api, twice)
    first, again = answers
    assert [run["sourceUrl"] for run in first["runs"]] == [idle] and [c["sourceUrl"] for c in commands] == [idle]
    assert first["skipped"] == [{"sourceUrl": pending, "reason": "already running"}]
    assert again == {"runs": [], "skipped": [{"sourceUrl": idle, "reason": "already requested"}]}

    # once the run is in import_logs and finished, the feed may run again
    [run] = first["runs"]
    mongo_db(api.env).import_logs.insert_one(stored(run_doc(run["runId"], idle, "completed", None)))
    later = await api.json("POST", "/api/import/run", 202, json={"feeds": [idle]})
    assert [r["sourceUrl"] for r in later["runs"]] == [idle] and later["skipped"] == []


async def test_concurrent_run_requests_start_a_feed_once(api: ApiHarness) -> None:
    url = new_url("race")
    await api.json("POST", "/api/feeds", 201, json={"url": url})
    answers = await asyncio.gather(*(api.json("POST", "/api/import/run", 202, json={"feeds": [url]}) for _ in range(5)))
    assert sum(len(answer["runs"]) for answer in answers) == 1
    assert sum(len(answer["skipped"]) for answer in answers) == 4


async def test_the_default_run_skips_busy_feeds(make_api: MakeApi) -> None:
    own = await make_api()
    busy, free = new_url("busy"), new_url("free")
    for url in (busy, free):
        await own.json("POST", "/api/feeds", 201, json={"url": url})
    mongo_db(own.env).import_logs.insert_one(stored(run_doc(f"r-{uuid.uuid4().hex}", busy, "running", None)))
    result = await own.json("POST", "/api/import/run", 202)
    assert [run["sourceUrl"] for run in result["runs"]] == [free]
    assert result["skipped"] == [{"sourceUrl": busy, "reason": "already running"}]


@pytest.mark.parametrize("url", ["https://example.com/feed\nINFO forged", "https://example.com/\r\nX: y",
                                 "https://example.com/\u202efeed", "https://exam\x00ple.com/"])
async def test_urls_with_control_characters_are_400(api: ApiHarness, url: str) -> None:
    error = await api.json("POST", "/api/feeds", 400, json={"url": url})
    assert "\n" not in error["error"] and "\r" not in error["error"]
    await api.json("POST", "/api/import/run", 400, json={"feeds": [url]})
    assert mongo_db(api.env).feeds.count_documents({"url": url}) == 0


# --- over HTTP: rate limit -----------------------------------------------------------------------------


async def test_changes_beyond_the_burst_get_429_with_retry_after(make_api: MakeApi) -> None:
    limited = await make_api(fast_options(rate_limit_burst=3, rate_limit_per_second=0.2))
    missing = "/api/feeds/0123456789abcdef01234567"
    for _ in range(3):
        await limited.json("DELETE", missing, 404)
    response = await limited.client.post("/api/feeds", json={"url": new_url()})
    body = await response.json()
    assert response.status == 429 and body["error"].startswith("too many changes")
    assert int(response.headers["Retry-After"]) >= 1
    await limited.json("PATCH", missing, 429, json={"enabled": False})
    await limited.json("POST", "/api/import/run", 429)
    assert mongo_db(limited.env).feeds.count_documents({}) == 0
    await limited.json("GET", "/api/feeds", 200)  # reads are not limited
    health = await limited.client.get("/health")  # its status says whether a worker consumes, never 429
    assert health.status in (200, 503) and {"kafka", "mongo", "workers"} <= set(await health.json())


async def test_cross_origin_requests_do_not_spend_the_clients_budget(make_api: MakeApi) -> None:
    limited = await make_api(fast_options(rate_limit_burst=2, rate_limit_per_second=0.01))
    for _ in range(10):
        await limited.json("POST", "/api/feeds", 403, json={"url": new_url()}, headers={"Origin": "http://evil.example"})
    await limited.json("POST", "/api/feeds", 201, json={"url": new_url()})


# --- errors name no host and no exception ----------------------------------------------------------------


async def test_store_outage_answers_name_no_host_and_no_exception(make_api: MakeApi) -> None:
    port = free_port()
    down = await make_api(fast_options(health_timeout_seconds=1.0), MONGO_URL=f"mongodb://127.0.0.1:{port}",
                          API_STORE_TIMEOUT_SECONDS="1")
    answers = [
        await down.json("GET", "/api/jobs", 503),
        await down.json("GET", "/api/import-logs", 503),
        await down.json("GET", "/api/feeds", 503),
        await down.json("POST", "/api/feeds", 503, json={"url": new_url()}),
        await down.json("POST", "/api/import/run", 503),
    ]
    assert answers == [{"error": "store unavailable"}] * len(answers)
    health = await down.client.get("/health")
    text = await health.text()
    assert health.status == 503
    for leak in (str(port), "127.0.0.1", "localhost", "Error(", "Timeout", "Traceback"):
        assert leak not in text, (leak, text)


def test_settings_defaults_keep_the_api_startable() -> None:
    """The documented defaults (loopback, no token) must start: the guard is not in the way of `make run`."""
    assert exposure_problem(Settings()) is None
    assert Settings().api_host == "127.0.0.1"


def test_compose_sets_a_token_for_its_exposed_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env: dict[str, Any] = compose["services"]["api"]["environment"]
    assert env["API_HOST"] == EVERYWHERE and "API_TOKEN" in env and "${API_TOKEN" in str(env["API_TOKEN"])


def test_compose_lists_the_host_names_its_clients_use() -> None:
    """Prometheus scrapes the API by its service name: without it in API_ALLOWED_HOSTS every scrape would be 421."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env: dict[str, Any] = compose["services"]["api"]["environment"]
    default = str(env["API_ALLOWED_HOSTS"]).removeprefix("${API_ALLOWED_HOSTS:-").removesuffix("}")
    settings = Settings.from_env({"API_HOST": EVERYWHERE, "API_TOKEN": "t", "API_ALLOWED_HOSTS": default})
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [api_job] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "jobstream-api"]
    for target in api_job["static_configs"][0]["targets"]:
        assert host_allowed(target, settings.api_host, settings.allowed_hosts), target
    assert not host_allowed("evil.example:8080", settings.api_host, settings.allowed_hosts)
    Settings.from_env({"API_TOKEN": "t", "API_READS_REQUIRE_TOKEN":
                       str(env["API_READS_REQUIRE_TOKEN"]).removeprefix("${API_READS_REQUIRE_TOKEN:-").removesuffix("}")})
