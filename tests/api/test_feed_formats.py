"""Feed formats and mappings over the API (SPEC §3a, §5): stored with each feed, validated on save, sent with runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.support import ApiHarness
from tests.api.test_http_api import commands_after, new_url
from tests.support import mongo_db

pytestmark = pytest.mark.integration

MAPPING: dict[str, Any] = {"item": "jobs/position", "fields": {"externalId": "@id", "title": "job:title",
                                                               "location": ["place/city", "place/country"], "url": "apply/@href"}}


async def test_a_feed_keeps_its_format_and_mapping_and_its_runs_carry_them(api: ApiHarness) -> None:
    url = new_url("mapped")
    created = await api.json("POST", "/api/feeds", 201, json={"url": url, "format": "xml", "mapping": MAPPING})
    assert (created["format"], created["mapping"]) == ("xml", MAPPING)
    stored = mongo_db(api.env).feeds.find_one({"url": url})
    assert stored is not None and (stored["format"], stored["mapping"]) == ("xml", MAPPING)
    listed = [feed for feed in (await api.json("GET", "/api/feeds", 200))["items"] if feed["url"] == url]
    assert listed == [{**created, "lastRun": None}]

    result, [command] = await commands_after(api, lambda: api.json("POST", "/api/import/run", 202, json={"feeds": [url]}))
    assert (command["format"], command["mapping"]) == ("xml", MAPPING)

    changed = await api.json("PATCH", f"/api/feeds/{created['id']}", 200, json={"format": "indeed"})
    assert (changed["format"], changed["mapping"]) == ("indeed", None)
    plain = await api.json("POST", "/api/feeds", 201, json={"url": new_url("plain")})
    assert (plain["format"], plain["mapping"]) == ("auto", None)


def deep(steps: int) -> str:
    return "/".join(["a"] * steps)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"format": "json"}, "format: must be one of auto, rss, atom, rdf, indeed, xml"),
    ({"format": "xml"}, "mapping: required for format 'xml'"),
    ({"format": "xml", "mapping": {**MAPPING, "code": "x"}}, "mapping: unknown field(s) 'code'"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"salary": "s", "title": "t", "url": "u"}}},
     "mapping.fields: unknown field(s) 'salary'"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"url": "u"}}}, "mapping.fields.title: missing"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"title": "t"}}}, "mapping.fields: missing an identity"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"title": deep(9), "url": "u"}}},
     "mapping.fields.title: path 'a/a/a/a/a/a/a/a/a' is too deep: 9 steps (at most 8)"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"title": "t", "url": "u", "categories": ["c"] * 31}}},
     "mapping.fields: too many paths (at most 32)"),
    ({"format": "xml", "mapping": {"item": "job", "fields": {"title": "string(t)", "url": "u"}}},
     "mapping.fields.title: 'string(t)' is not a plain path"),
    ({"format": "rss", "mapping": MAPPING}, "mapping: not used with format 'rss'"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
async def test_a_bad_format_or_mapping_is_a_400_naming_the_field_and_why(api: ApiHarness, body: dict[str, Any],
                                                                         message: str) -> None:
    url = new_url("bad")
    error = await api.json("POST", "/api/feeds", 400, json={"url": url, **body})
    assert message in error["error"]
    created = await api.json("POST", "/api/feeds", 201, json={"url": url})
    error = await api.json("PATCH", f"/api/feeds/{created['id']}", 400, json=body)
    assert message in error["error"]
    assert mongo_db(api.env).feeds.find_one({"url": url}, {"_id": 0, "format": 1, "mapping": 1}) == {
        "format": "auto", "mapping": None}  # nothing of a refused change was saved
