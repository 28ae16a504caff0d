"""RSS 2.0, Atom and RDF feeds: sample feeds, item counts, identity, failures and field normalising."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.feed import (
    ItemFailure,
    JobPosting,
    dedupe_key,
    fingerprint,
    parse_feed,
    syndication,
)
from tests.unit.feed_helpers import FEEDS, FIXTURES, SRC, atom, only_posting, postings, read, rss, sha1_key

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
    real = syndication.parse_date

    def exploding(value: str) -> datetime | None:
        if value.startswith("Tue"):
            raise RuntimeError("boom")
        return real(value)

    monkeypatch.setattr(syndication, "parse_date", exploding)
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


@pytest.mark.parametrize(
    ("item_xml", "company"),
    [
        ("<dc:creator>Poster</dc:creator><job_listing:company>Acme</job_listing:company>", "Acme"),
        ("<dc:creator> Poster </dc:creator>", "Poster"),
    ],
    ids=["job-listing-company-wins", "creator-only"],
)
def test_company_falls_back_to_dc_creator(item_xml: str, company: str) -> None:
    ns = 'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:job_listing="https://j.example"'
    assert only_posting(rss(f"<item><guid>1</guid>{item_xml}</item>", ns=ns)).company == company


@pytest.mark.parametrize(
    ("item_xml", "ns", "published_at"),
    [
        (
            "<dc:date>2025-01-06T10:00:00Z</dc:date>",
            'xmlns:dc="http://purl.org/dc/elements/1.1/"',
            datetime(2025, 1, 6, 10, 0, tzinfo=UTC),
        ),
        ("<pubDate>sometime soon</pubDate>", "", None),
    ],
    ids=["dc-date-when-pubdate-is-missing", "unparseable-date-keeps-the-posting"],
)
def test_item_date_fallbacks(item_xml: str, ns: str, published_at: datetime | None) -> None:
    job = only_posting(rss(f"<item><guid>1</guid>{item_xml}</item>", ns=ns))
    assert job.published_at == published_at


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


@pytest.mark.parametrize("ns", ['xmlns:job_listing="https://jobicy.com"', ""], ids=["declared-any-uri", "undeclared"])
def test_job_listing_is_matched_by_prefix_whatever_its_uri_or_even_undeclared(ns: str) -> None:
    item = "<item><guid>1</guid><job_listing:company>Acme</job_listing:company></item>"
    assert only_posting(rss(item, ns=ns)).company == "Acme"


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
