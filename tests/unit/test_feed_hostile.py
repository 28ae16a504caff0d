"""Hostile feed content meets bounds, not backtracking: issue 8's cases at the parser level."""

from __future__ import annotations

import time

import pytest

from models import feed
from models.feed import (
    MAX_CATEGORIES,
    MAX_DEPTH,
    MAX_DESCRIPTION_CHARS,
    MAX_KEY_CHARS,
    MAX_LINE_CHARS,
    MAX_REASON_CHARS,
    REFUSED_DTD,
    FeedError,
    ItemFailure,
    JobPosting,
    check_safe_xml,
    looks_like_html,
    parse_date,
    parse_feed,
)

SRC = "https://feeds.example/jobs.xml"
FAST = 1.0  # seconds; each case below took from 1.2 s to minutes before the fix


def rss(items: str, prolog: str = "") -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>{prolog}<rss version="2.0"><channel><title>T</title>{items}</channel></rss>'.encode()


def timed(fn: object, *args: object) -> float:
    started = time.perf_counter()
    try:
        fn(*args)  # type: ignore[operator]
    except FeedError:
        pass
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the measured regex cases


@pytest.mark.parametrize("n", [28, 5_000, 14_000])
def test_comment_run_before_a_broken_root_fails_fast(n: int) -> None:
    """``<!---->`` * 28 + ``<rss>``: 71 s before (the HTML sniff backtracked exponentially)."""
    payload = b"<!---->" * n + b"<rss>"
    assert timed(parse_feed, payload, SRC) < FAST
    with pytest.raises(FeedError, match=r"^XML parse error: no element found"):
        parse_feed(payload, SRC)


@pytest.mark.parametrize("spaces", [16_000, 32_000, 100_000])
def test_dates_with_long_whitespace_runs_are_bounded(spaces: int) -> None:
    """16,000 spaces took 1.75 s and 32,000 took 6.1 s in the RFC 822 regex; now a length bound comes first."""
    text = "Mon, 06 Jan 2025 10:00:00" + " " * spaces + "+0000x"
    started = time.perf_counter()
    assert parse_date(text) is None
    assert feed._RFC822_RE.match(text) is None  # the pattern alone is linear too
    assert time.perf_counter() - started < FAST


def test_a_feed_of_hostile_dates_fails_those_items_quickly() -> None:
    """The 64 KB feed with four such dates (6.5 s before): each item is a failed item with a reason."""
    date = "Mon, 06 Jan 2025 10:00:00" + " " * 16_000 + "x"
    items = "".join(f"<item><guid>g{i}</guid><pubDate>{date}</pubDate></item>" for i in range(4))
    started = time.perf_counter()
    parsed = parse_feed(rss(items + "<item><guid>ok</guid><pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate></item>"), SRC)
    assert time.perf_counter() - started < FAST
    failures = [i for i in parsed.items if isinstance(i, ItemFailure)]
    assert [f.key for f in failures] == ["g0", "g1", "g2", "g3"]
    assert failures[0].reason == "item too large: date has 16,026 characters (limit 10,000)"
    assert isinstance(parsed.items[-1], JobPosting) and parsed.items[-1].published_at is not None


def test_dates_just_under_the_bound_still_parse() -> None:
    assert parse_date("  Mon, 06 Jan 2025 10:00:00 GMT  ") is not None
    assert parse_date("Mon,  06   Jan   2025   10:00:00   GMT") is not None
    assert parse_date("x" * 300) is None


# --------------------------------------------------------------------------- HTML detection without a regex


@pytest.mark.parametrize(
    ("payload", "html"),
    [
        (b"<!doctype html><html></html>", True),
        (b"<!DOCTYPE HTML>\n<html>", True),
        (b"\xef\xbb\xbf  <!--x--> <!-- y -->\n<!doctype html>", True),
        (b'<?xml version="1.0"?>\n<!-- c --><html xmlns="http://www.w3.org/1999/xhtml">', True),
        (b"<html>", True),
        (b"<HTML\n lang=en>", True),
        (b"<!doctypehtml>", False),
        (b"<htmlx>", False),
        (b"<rss>", False),
        (b"<!-- unterminated <html>", False),
        (b"<?xml unterminated <html>", False),
        (b"", False),
        (b" " * 5000 + b"<html>", False),  # beyond the 4096 bytes sniffed, as before
        (b"<!---->" * 20_000 + b"<html>", False),
    ],
)
def test_html_detection(payload: bytes, html: bool) -> None:
    started = time.perf_counter()
    assert looks_like_html(payload) is html
    assert time.perf_counter() - started < FAST


@pytest.mark.parametrize(("encoding", "message"), [("x-klingon", "XML parse error: unknown encoding: x-klingon"),
                                                   ("UTF-32", "XML parse error: multi-byte encodings are not supported")])
def test_unusable_declared_encodings_are_feed_errors(encoding: str, message: str) -> None:
    with pytest.raises(FeedError) as info:
        parse_feed(rss("<item><guid>1</guid></item>").replace(b"UTF-8", encoding.encode()), SRC)
    assert str(info.value) == message


# --------------------------------------------------------------------------- DTD, nesting


@pytest.mark.parametrize(
    "subset",
    [
        '<!ATTLIST item a CDATA "' + "x" * 1000 + '">',  # the known amplification: defaulted on every element
        "<!ELEMENT rss ANY>",
        "",  # even an empty internal subset
        "<!-- just a comment -->",
        '<!NOTATION n SYSTEM "n">',
    ],
)
def test_internal_dtd_subsets_are_refused(subset: str) -> None:
    payload = rss("<item><guid>1</guid></item>" * 10, f"<!DOCTYPE rss [{subset}]>")
    with pytest.raises(FeedError) as info:
        check_safe_xml(payload)
    assert str(info.value) == REFUSED_DTD
    with pytest.raises(FeedError, match="internal DTD subset"):
        parse_feed(payload, SRC)


def test_external_doctype_without_subset_is_still_accepted() -> None:
    payload = rss("<item><guid>1</guid></item>", '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "x.dtd">')
    assert len(parse_feed(payload, SRC).items) == 1


@pytest.mark.parametrize("where", ["channel", "item", "description"])
def test_deep_nesting_is_refused(where: str) -> None:
    deep = "<a>" * 50_000 + "</a>" * 50_000
    inner = {"channel": deep, "item": f"<item><guid>1</guid>{deep}</item>",
             "description": f"<item><guid>1</guid><description>{deep}</description></item>"}[where]
    started = time.perf_counter()
    with pytest.raises(FeedError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_feed(rss(inner), SRC)
    assert time.perf_counter() - started < FAST


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth_left = MAX_DEPTH - 4  # rss, channel, item, description
    body = "<div>" * depth_left + "x" + "</div>" * depth_left
    payload = rss(f'<item><guid>1</guid><description type="xhtml">{body}</description></item>')
    [item] = parse_feed(payload, SRC).items
    assert isinstance(item, JobPosting) and item.description.endswith("x" + "</div>" * depth_left)


# --------------------------------------------------------------------------- bounded fields, keys, reasons


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (f"<guid>g</guid><title>{'t' * (MAX_LINE_CHARS + 1)}</title>", "item too large: title has 10,001 characters"),
        (f"<guid>g</guid><description>{'d' * (MAX_DESCRIPTION_CHARS + 1)}</description>",
         "item too large: description has 1,000,001 characters (limit 1,000,000)"),
        (f"<guid>g</guid><link>https://x/{'l' * MAX_LINE_CHARS}</link>", "item too large: link has 10,010 characters"),
        ("<guid>g</guid>" + "".join(f"<category>c{i}</category>" for i in range(MAX_CATEGORIES + 1)),
         "item too large: categories has 1,001 entries (limit 1,000)"),
        (f"<guid>g</guid><job_listing:company>{'c' * 20_000}</job_listing:company>", "item too large: company has 20,000"),
    ],
    ids=["title", "description", "link", "categories", "company"],
)
def test_oversized_fields_fail_the_item_with_a_reason(item: str, reason: str) -> None:
    parsed = parse_feed(rss(f"<item>{item}</item><item><guid>fine</guid></item>"), SRC)
    failure, fine = parsed.items
    assert isinstance(failure, ItemFailure) and failure.key == "g" and failure.reason.startswith(reason)
    assert isinstance(fine, JobPosting)


def test_huge_guid_makes_a_clipped_failure_key() -> None:
    guid = "g" * 50_000
    [failure] = parse_feed(rss(f"<item><guid>{guid}</guid></item>"), SRC).items
    assert isinstance(failure, ItemFailure)
    assert len(failure.key) == MAX_KEY_CHARS and failure.key.endswith("\u2026")
    assert failure.reason == "item too large: guid has 50,000 characters (limit 10,000)"


def test_failure_keys_and_reasons_are_clipped_whatever_builds_them() -> None:
    failure = ItemFailure(key="k" * 10_000, reason="r" * 10_000)
    assert len(failure.key) == MAX_KEY_CHARS and len(failure.reason) == MAX_REASON_CHARS
    assert ItemFailure(key="short", reason="fine") == ItemFailure("short", "fine")


def test_huge_feed_title_is_clipped_not_fatal() -> None:
    payload = rss("<item><guid>1</guid></item>").replace(b"<title>T</title>", b"<title>" + b"T" * 50_000 + b"</title>")
    parsed = parse_feed(payload, SRC)
    assert len(parsed.title) <= MAX_LINE_CHARS and len(parsed.items) == 1


def test_huge_attribute_on_a_link_fails_the_item() -> None:
    href = "https://x.example/" + "a" * 2_000_000
    payload = (f'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><entry><id>e1</id><link href="{href}"/></entry>'
               "<entry><id>e2</id></entry></feed>").encode()
    started = time.perf_counter()
    failure, fine = parse_feed(payload, SRC).items
    assert time.perf_counter() - started < FAST
    assert isinstance(failure, ItemFailure) and failure.reason.startswith("item too large: link has 2,000,018 characters")
    assert isinstance(fine, JobPosting)
