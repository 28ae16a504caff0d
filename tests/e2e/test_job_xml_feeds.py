"""Job XML feeds (SPEC §3a) through the whole pipeline: feed server → worker (parse processes, Kafka) → FerretDB."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from models.feed import MAX_DEPTH, MAX_ITEM_NODES, MAX_ITEM_TEXT_CHARS, dedupe_key
from models.registry import FeedEntry
from models.runs import FINISHED
from streams.cli import import_feeds
from tests.e2e.test_pipeline import assert_invariant, counts
from tests.support import FeedServer, Process, mongo_db, settings_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def run_feed(env: dict[str, str], entry: FeedEntry, timeout: float = 120.0) -> dict[str, Any]:
    """One run of ``entry`` (with its format and mapping, as the registry sends them); its finished import_logs document."""
    [run] = (await import_feeds(settings_of(env), [entry], timeout, io.StringIO())).values()
    assert run["status"] in FINISHED, run
    doc = mongo_db(env).import_logs.find_one({"runId": run["runId"]}, {"_id": 0})
    assert doc is not None
    assert_invariant(doc)
    return doc


INDEED = """<?xml version="1.0" encoding="utf-8"?>
<source>
  <publisher>Acme Jobs</publisher>
  <publisherurl>https://acme.example</publisherurl>
  <lastBuildDate>Mon, 06 Jan 2025 10:00:00 GMT</lastBuildDate>
  <job>
    <title><![CDATA[Senior <Python> Engineer]]></title>
    <date><![CDATA[Mon, 06 Jan 2025 10:00:00 GMT]]></date>
    <referencenumber><![CDATA[A-1]]></referencenumber>
    <url><![CDATA[https://acme.example/jobs/1?src=feed&lang=fr]]></url>
    <company>Smith &amp; Sons</company>
    <city>Lyon</city><state>ARA</state><country>FR</country>
    <description><![CDATA[<p>Build things &ndash; fast</p>]]></description>
    <jobtype>fulltime</jobtype>
    <category>Engineering</category><category>Python</category>
  </job>
  <job>
    <title>Caf&#233; manager</title>
    <date>the day before yesterday</date>
    <url>https://acme.example/jobs/2</url>
    <company>Acme</company>
    <city>Paris</city><country>FR</country>
    <description>Run the caf&#233;.</description>
  </job>
  <job>
    <referencenumber>A-3</referencenumber>
    <url>https://acme.example/jobs/3</url>
    <company>Acme</company>
  </job>
  {more}
</source>"""


def indeed_jobs(n: int) -> str:
    return "".join(f"<job><title>Job {i}</title><referencenumber>R-{i}</referencenumber><url>https://acme.example/r/{i}</url>"
                   f"<date>2025-01-0{1 + i % 9}T08:00:00Z</date><city>Nantes</city><country>FR</country></job>" for i in range(n))


async def test_an_indeed_feed_is_imported_with_its_failed_item_and_reimported_without_a_write(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-indeed.xml", INDEED.format(more=indeed_jobs(20)).encode(), conditional=False)
    db = mongo_db(pipeline_env)
    first = await run_feed(pipeline_env, FeedEntry(url, "Acme", format="indeed"))
    assert first["status"] == "partial"
    assert counts(first) == (23, 22, 0, 0, 1)
    assert [{k: f[k] for k in ("key", "reason", "stage")} for f in first["failures"]] == [
        {"key": "A-3", "reason": "missing title", "stage": "normalise"}]
    assert first["meta"]["feedKind"] == "indeed" and first["meta"]["feedTitle"] == "Acme Jobs"

    job = db.jobs.find_one({"_id": dedupe_key(url, "A-1")})
    assert job is not None
    assert (job["title"], job["company"], job["location"], job["region"], job["jobType"], job["categories"]) == (
        "Senior <Python> Engineer", "Smith & Sons", "Lyon, ARA, FR", "FR", "fulltime", ["Engineering", "Python"])
    assert job["url"] == "https://acme.example/jobs/1?src=feed&lang=fr"
    assert job["description"] == "<p>Build things \u2013 fast</p>"
    assert job["publishedAt"].replace(tzinfo=UTC) == datetime(2025, 1, 6, 10, tzinfo=UTC)
    fallback = db.jobs.find_one({"_id": dedupe_key(url, "https://acme.example/jobs/2")})  # no referencenumber: its url
    assert fallback is not None
    assert (fallback["externalId"], fallback["title"], fallback["publishedAt"]) == (
        "https://acme.example/jobs/2", "Caf\u00e9 manager", None)  # a bad date: kept without one, as in RSS

    before = {d["_id"]: (d["version"], d["updatedAt"]) for d in db.jobs.find({"sourceUrl": url})}
    again = await run_feed(pipeline_env, FeedEntry(url, "Acme", format="indeed"))
    assert counts(again) == (23, 0, 0, 22, 1)
    assert {d["_id"]: (d["version"], d["updatedAt"]) for d in db.jobs.find({"sourceUrl": url})} == before
    auto = await run_feed(pipeline_env, FeedEntry(url, "Acme"))  # told from <source>: the same postings
    assert counts(auto) == (23, 0, 0, 22, 1)


CUSTOM = """<?xml version="1.0" encoding="utf-8"?>
<export xmlns:hr="https://ats.example/ns/hr">
  <head><generated>2025-02-01</generated></head>
  <openings>
    <opening ref="ATS-1" posted="2025-02-03T04:05:06+01:00">
      <hr:title>Data Analyst</hr:title>
      <employer name="Globex &amp; Partners"/>
      <hr:place><city>Berlin</city><country code="DE">Germany</country></hr:place>
      <tags><tag>data</tag><tag>sql</tag></tags>
      <apply href="https://ats.example/o/1"/>
      <text><![CDATA[<p>Numbers.</p>]]></text>
    </opening>
    <opening ref="ATS-2" posted="2025-02-04">
      <hr:title>Backend Developer</hr:title>
      <employer name="Initech"/>
      <hr:place><city>Madrid</city><country code="ES">Spain</country></hr:place>
      <apply href="https://ats.example/o/2"/>
    </opening>
  </openings>
</export>"""
CUSTOM_MAPPING: dict[str, Any] = {
    "item": "openings/opening",
    "fields": {"externalId": "@ref", "title": "hr:title", "company": "employer/@name",
               "location": ["hr:place/city", "hr:place/country"], "region": "hr:place/country/@code",
               "categories": "tags/tag", "url": "apply/@href", "description": "text", "publishedAt": "@posted"},
}


async def test_a_custom_xml_feed_is_read_from_nested_elements_attributes_and_prefixed_names(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker()
    url = feed_server.put(f"{unique}-custom.xml", CUSTOM.encode(), conditional=False)
    doc = await run_feed(pipeline_env, FeedEntry(url, "ATS", format="xml", mapping=CUSTOM_MAPPING))
    assert doc["status"] == "completed" and counts(doc) == (2, 2, 0, 0, 0)
    assert doc["meta"]["feedKind"] == "xml"
    jobs = {d["externalId"]: d for d in mongo_db(pipeline_env).jobs.find({"sourceUrl": url})}
    first = jobs["ATS-1"]
    assert (first["title"], first["company"], first["location"], first["region"], first["categories"], first["url"],
            first["description"]) == ("Data Analyst", "Globex & Partners", "Berlin, Germany", "DE", ["data", "sql"],
                                      "https://ats.example/o/1", "<p>Numbers.</p>")
    assert first["publishedAt"].replace(tzinfo=UTC) == datetime(2025, 2, 3, 3, 5, 6, tzinfo=UTC)
    assert (jobs["ATS-2"]["location"], jobs["ATS-2"]["categories"]) == ("Madrid, Spain", [])

    changed = dict(CUSTOM_MAPPING, fields={**CUSTOM_MAPPING["fields"], "location": "hr:place/city"})
    remapped = await run_feed(pipeline_env, FeedEntry(url, "ATS", format="xml", mapping=changed))
    assert counts(remapped) == (2, 0, 2, 0, 0)  # a mapping change is an edit of every posting it changes

    unmapped = await run_feed(pipeline_env, FeedEntry(url, "ATS"))
    assert unmapped["status"] == "failed" and unmapped["error"] == "not a feed: root element <export>"


def source(jobs: str, prolog: str = "") -> bytes:
    return f'<?xml version="1.0"?>{prolog}<source><publisher>P</publisher>{jobs}</source>'.encode()


GOOD_JOB = "<job><title>Good</title><referencenumber>ok</referencenumber></job>"


async def test_hostile_job_xml_feeds_fail_cleanly_within_the_deadline(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str
) -> None:
    start_worker(PARSE_TIMEOUT_SECONDS="10")
    depth = MAX_DEPTH + 50
    cases = {
        "deep": (source("<job>" + "<d>" * depth + "</d>" * depth + "</job>"), "failed", "nested deeper than"),
        "dtd": (source(GOOD_JOB, '<!DOCTYPE source [<!ATTLIST job x CDATA "y">]>'), "failed", "internal DTD subset"),
        "entities": (source(GOOD_JOB, '<!DOCTYPE source [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'), "failed",
                     "declares entities"),
        "wide": (source("<job><title>Wide</title><referencenumber>w</referencenumber>" + "<x/>" * (MAX_ITEM_NODES + 10)
                        + "</job>" + GOOD_JOB), "partial", "more than 100,000 elements"),
        "huge": (source("<job><referencenumber>h</referencenumber><description>" + "x" * (MAX_ITEM_TEXT_CHARS + 10)
                        + "</description></job>" + GOOD_JOB), "partial", "characters of text"),
    }
    urls = {name: feed_server.put(f"{unique}-{name}.xml", body, conditional=False) for name, (body, _, _) in cases.items()}
    runs = await import_feeds(settings_of(pipeline_env), [FeedEntry(u, n, format="indeed") for n, u in urls.items()],
                              120.0, io.StringIO())
    db = mongo_db(pipeline_env)
    for name, (_, status, reason) in cases.items():
        [run_id] = [run_id for run_id, run in runs.items() if run["sourceUrl"] == urls[name]]
        doc = db.import_logs.find_one({"runId": run_id}, {"_id": 0})
        assert doc is not None and doc["status"] == status, (name, doc)
        assert_invariant(doc)
        if status == "failed":
            assert reason in doc["error"] and counts(doc) == (0, 0, 0, 0, 0), (name, doc)
        else:
            assert counts(doc) == (2, 1, 0, 0, 1), (name, doc)
            assert reason in doc["failures"][0]["reason"] and doc["failures"][0]["stage"] == "parse", (name, doc)
