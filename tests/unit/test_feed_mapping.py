"""Job XML feeds (SPEC §3a): the ``indeed`` preset, custom ``xml`` mappings, their validation and their bounds."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from models.feed import (
    MAX_DEPTH,
    MAX_ITEM_NODES,
    REFUSED_DTD,
    REFUSED_ENTITIES,
    FeedError,
    ItemFailure,
    JobPosting,
    MappingError,
    parse_feed,
    stream_feed,
    validate_feed_format,
)
from models.feed.mapping import INDEED_MAPPING, parse_mapping
from models.registry import RegistryError, entry_from, parse_feeds_file
from tests.unit.feed_helpers import SRC, postings

INDEED = b"""<?xml version="1.0" encoding="utf-8"?>
<source>
  <publisher>Acme &amp; Co Jobs</publisher>
  <publisherurl>https://acme.example</publisherurl>
  <job>
    <title><![CDATA[Senior <Python> Engineer]]></title>
    <date><![CDATA[Mon, 06 Jan 2025 10:00:00 GMT]]></date>
    <referencenumber><![CDATA[A-1]]></referencenumber>
    <url><![CDATA[https://acme.example/jobs/1?a=1&b=2]]></url>
    <company>Acme &amp; Co</company>
    <city>Lyon</city><state>ARA</state><country>FR</country>
    <description><![CDATA[<p>Build &ndash; things</p>]]></description>
    <jobtype>fulltime</jobtype>
    <category>Engineering</category><category>Python</category>
  </job>
  <job>
    <title>No reference</title>
    <date>not a date</date>
    <url>https://acme.example/jobs/2</url>
    <city>Paris</city><country>FR</country>
  </job>
  <job>
    <referencenumber>A-3</referencenumber>
    <url>https://acme.example/jobs/3</url>
  </job>
  <job><title>Neither</title></job>
</source>"""


def test_indeed_feed_is_told_from_its_root_and_mapped_by_the_preset() -> None:
    parsed = parse_feed(INDEED, SRC, "Acme")
    assert (parsed.kind, parsed.title) == ("indeed", "Acme & Co Jobs")
    first, second, third, fourth = parsed.items
    assert first == JobPosting.build(
        source_url=SRC, source_name="Acme", external_id="A-1", title="Senior <Python> Engineer", company="Acme & Co",
        location="Lyon, ARA, FR", job_type="fulltime", categories=("Engineering", "Python"), region="FR",
        url="https://acme.example/jobs/1?a=1&b=2", description="<p>Build \u2013 things</p>",
        published_at=datetime(2025, 1, 6, 10, tzinfo=UTC))
    assert isinstance(second, JobPosting)
    assert (second.external_id, second.url, second.location, second.published_at) == (
        "https://acme.example/jobs/2", "https://acme.example/jobs/2", "Paris, FR", None)  # a bad date: kept without one
    assert third == ItemFailure("A-3", "missing title")
    assert fourth == ItemFailure("Neither", "missing guid and link")


@pytest.mark.parametrize("feed_format", ["auto", "indeed"])
def test_indeed_preset_fields_can_be_overridden_one_by_one(feed_format: str) -> None:
    mapping = {"fields": {"company": "publisher", "location": "city"}} if feed_format == "indeed" else None
    parsed = parse_feed(INDEED, SRC, feed_format=feed_format, mapping=mapping)
    first = parsed.items[0]
    assert isinstance(first, JobPosting)
    assert first.location == ("Lyon" if mapping else "Lyon, ARA, FR")
    assert first.company == ("" if mapping else "Acme & Co")  # <publisher> is not a child of <job>


CUSTOM = b"""<?xml version="1.0"?>
<feed-export xmlns:job="https://ats.example/ns">
  <meta><name>ATS</name></meta>
  <jobs>
    <position id="p-1" posted="2025-02-03T04:05:06+01:00">
      <job:title>Data &lt;Analyst&gt;</job:title>
      <employer name="Globex"/>
      <job:location><city>Berlin</city><country code="DE">Germany</country></job:location>
      <tags><tag>data</tag><tag>sql</tag><tag>data</tag></tags>
      <apply href="https://ats.example/p-1"/>
      <body><p>Hello</p><ul><li>one</li></ul></body>
    </position>
    <position posted="yesterday"><job:title>Second</job:title><apply href="https://ats.example/p-2"/></position>
  </jobs>
  <jobs><position id="p-3"><job:title>Other list</job:title></position></jobs>
</feed-export>"""
CUSTOM_MAPPING: dict[str, Any] = {
    "item": "jobs/position",
    "fields": {
        "externalId": "@id",
        "title": "job:title",
        "company": "employer/@name",
        "location": ["job:location/city", "job:location/country"],
        "region": "job:location/country/@code",
        "categories": "tags/tag",
        "url": "apply/@href",
        "description": "body",
        "publishedAt": "@posted",
    },
}


def test_custom_mapping_reads_nested_elements_attributes_and_prefixed_names() -> None:
    parsed = parse_feed(CUSTOM, SRC, "ATS", feed_format="xml", mapping=CUSTOM_MAPPING)
    assert parsed.kind == "xml"
    first, second, third = postings(parsed)
    assert first == JobPosting.build(
        source_url=SRC, source_name="ATS", external_id="p-1", title="Data <Analyst>", company="Globex",
        location="Berlin, Germany", region="DE", categories=("data", "sql"), url="https://ats.example/p-1",
        description="<p>Hello</p><ul><li>one</li></ul>", published_at=datetime(2025, 2, 3, 3, 5, 6, tzinfo=UTC))
    assert (second.external_id, second.url, second.published_at) == ("https://ats.example/p-2", "https://ats.example/p-2", None)
    assert (third.external_id, third.title) == ("p-3", "Other list")


def test_auto_format_with_a_mapping_reads_an_unknown_root_as_xml() -> None:
    assert parse_feed(CUSTOM, SRC, mapping=CUSTOM_MAPPING).kind == "xml"


@pytest.mark.parametrize(("payload", "feed_format", "message"), [
    (CUSTOM, "auto", "not a feed: root element <feed-export>"),
    (INDEED, "rss", "not a rss feed: root element <source>"),
    (b"<rss><channel/></rss>", "atom", "not a atom feed: root element <rss>"),
])
def test_a_root_that_the_format_does_not_read_is_a_clear_feed_error(payload: bytes, feed_format: str, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_feed(payload, SRC, feed_format=feed_format)


def test_items_are_streamed_and_lanes_skip_the_items_they_leave_out() -> None:
    seen: list[JobPosting | ItemFailure | None] = []
    stream_feed(INDEED, SRC, "", lambda item: seen.append(item) or True, wanted=lambda seq: seq % 2 == 0)
    assert [type(item).__name__ for item in seen] == ["JobPosting", "NoneType", "ItemFailure", "NoneType"]


def job_feed(jobs: str, prolog: str = "") -> bytes:
    return f'<?xml version="1.0"?>{prolog}<source><publisher>P</publisher>{jobs}</source>'.encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [  # a pattern searched in the error: "refused" anywhere, or the whole message (\A...\Z)
        (job_feed("<job>" + "<x>" * (MAX_DEPTH + 5) + "</x>" * (MAX_DEPTH + 5) + "</job>"), "refused"),
        (job_feed("<job/>", '<!DOCTYPE source [<!ATTLIST job a CDATA "x">]>'), rf"\A{re.escape(REFUSED_DTD)}\Z"),
        (job_feed("<job/>", '<!DOCTYPE source [<!ENTITY a "aaaa">]>'), rf"\A{re.escape(REFUSED_ENTITIES)}\Z"),
    ],
    ids=["deep", "dtd", "entities"],
)
def test_hostile_job_xml_is_refused(payload: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_feed(payload, SRC)


def test_a_huge_job_fails_alone() -> None:
    wide = "<job><title>W</title><url>https://w.example</url>" + "<x/>" * (MAX_ITEM_NODES + 1) + "</job>"
    good = "<job><title>G</title><url>https://g.example</url></job>"
    failed, kept = parse_feed(job_feed(wide + good), SRC).items
    assert isinstance(failed, ItemFailure) and failed.stage == "parse" and "item too large" in failed.reason
    assert failed.key == "https://w.example"
    assert isinstance(kept, JobPosting)


# --------------------------------------------------------------------------- validation


def deep(steps: int) -> str:
    return "/".join(["a"] * steps)


@pytest.mark.parametrize(("feed_format", "mapping", "message"), [
    ("json", None, "format: must be one of auto, rss, atom, rdf, indeed, xml"),
    (7, None, "format: must be one of"),
    ("xml", None, "mapping: required for format 'xml'"),
    ("rss", {"item": "job", "fields": {"title": "t", "url": "u"}}, "mapping: not used with format 'rss'"),
    ("xml", [], "mapping: must be an object"),
    ("xml", {"item": "job", "fields": {"title": "t", "url": "u"}, "script": "x"}, r"mapping: unknown field\(s\) 'script'"),
    ("xml", {"fields": {"title": "t", "url": "u"}}, "mapping.item: missing"),
    ("xml", {"item": "job", "fields": {"title": "t", "salary": "s", "url": "u"}}, r"mapping.fields: unknown field\(s\) 'salary'"),
    ("xml", {"item": "job", "fields": {"url": "u"}}, "mapping.fields.title: missing"),
    ("xml", {"item": "job", "fields": {"title": "t"}}, "mapping.fields: missing an identity"),
    ("xml", {"item": "job", "fields": {"title": deep(9), "url": "u"}}, "mapping.fields.title: path .* is too deep: 9 steps"),
    ("xml", {"item": deep(9), "fields": {"title": "t", "url": "u"}}, "mapping.item: path .* is too deep"),
    ("xml", {"item": "job", "fields": {"title": "t", "url": "u", "categories": ["c"] * 31}}, "mapping.fields: too many paths"),
    ("xml", {"item": "job", "fields": {"title": "count(x)", "url": "u"}}, "mapping.fields.title: 'count\\(x\\)' is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "a//b", "url": "u"}}, "mapping.fields.title: 'a//b' is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "*", "url": "u"}}, "is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "../x", "url": "u"}}, "is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "a[1]", "url": "u"}}, "is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "t", "url": "@"}}, "mapping.fields.url: '@' is not a plain path"),
    ("xml", {"item": "job", "fields": {"title": "t", "url": ["u", 3]}}, "mapping.fields.url\\[1\\]: must be a non-empty path"),
    ("xml", {"item": "job/@id", "fields": {"title": "t", "url": "u"}}, "mapping.item: the item path names elements only"),
    ("indeed", {"fields": {"title": None}}, "mapping.fields.title: missing"),
])
def test_bad_formats_and_mappings_name_the_field_and_why(feed_format: Any, mapping: Any, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        validate_feed_format(feed_format, mapping)


AT_THE_BOUNDS = {"item": "a/b/c/d/e/f/g/h", "fields": {"title": deep(8), "url": "u", "categories": ["c"] * 30}}


@pytest.mark.parametrize(("feed_format", "mapping", "stored"), [
    (None, None, ("auto", None)),
    ("indeed", None, ("indeed", None)),
    ("xml", {**CUSTOM_MAPPING, "item": " jobs/position "}, ("xml", CUSTOM_MAPPING)),
    ("xml", AT_THE_BOUNDS, ("xml", AT_THE_BOUNDS)),  # 32 paths of 8 steps
], ids=["default-auto", "indeed-preset", "xml-item-stripped", "xml-at-the-bounds"])
def test_valid_formats_are_stored_with_their_defaults(feed_format: Any, mapping: Any, stored: tuple[str, Any]) -> None:
    assert validate_feed_format(feed_format, mapping) == stored


def test_the_indeed_preset_items_are_two_steps_deep() -> None:
    assert parse_mapping(INDEED_MAPPING).item_depth == 2


def test_feeds_file_takes_format_and_mapping_and_refuses_bad_ones() -> None:
    [entry] = parse_feeds_file("feeds:\n  - url: https://ats.example/feed\n    format: indeed\n")
    assert (entry.format, entry.mapping) == ("indeed", None)
    with pytest.raises(RegistryError, match=r"feeds\[0\]: mapping: required for format 'xml'"):
        parse_feeds_file("feeds:\n  - url: https://ats.example/feed\n    format: xml\n")
    with pytest.raises(RegistryError, match="unknown field"):
        entry_from({"url": "https://ats.example/feed", "mappings": {}})
