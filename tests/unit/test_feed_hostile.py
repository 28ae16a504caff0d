"""Hostile feed content meets bounds, not backtracking: issue 8's cases at the parser level."""

from __future__ import annotations

import time
from xml.parsers import expat

import pytest

from deploy import chaos_corpus
from models import feed
from models.feed import (
    MAX_CATEGORIES,
    MAX_DEPTH,
    MAX_DESCRIPTION_CHARS,
    MAX_ITEM_NODES,
    MAX_ITEM_TEXT_CHARS,
    MAX_KEY_CHARS,
    MAX_LINE_CHARS,
    MAX_REASON_CHARS,
    REFUSED_DTD,
    FeedError,
    ItemFailure,
    JobPosting,
    check_safe_xml,
    dates,
    guard,
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
    assert dates._RFC822_RE.match(text) is None  # the pattern alone is linear too
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


@pytest.mark.parametrize(
    ("text", "parses"),
    [
        ("  Mon, 06 Jan 2025 10:00:00 GMT  ", True),
        ("Mon,  06   Jan   2025   10:00:00   GMT", True),
        ("x" * 300, False),
    ],
    ids=["padded", "spaced-out", "long-non-date"],
)
def test_dates_just_under_the_bound_still_parse(text: str, parses: bool) -> None:
    assert (parse_date(text) is not None) is parses


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


# --------------------------------------------------------------------------- per-item bounds of the item reader (issue 22)


def test_the_corpus_writes_the_reader_bounds_as_they_are() -> None:
    """``deploy/chaos_corpus.py`` does not import models/ (its truths stay independent): its copies must agree."""
    assert (chaos_corpus.ITEM_ELEMENTS_BOUND, chaos_corpus.ITEM_TEXT_BOUND) == (MAX_ITEM_NODES, MAX_ITEM_TEXT_CHARS)


@pytest.mark.parametrize(
    "case",
    [
        chaos_corpus.wide_item("wide", 1_000_000),
        chaos_corpus.wide_item("wide-names", 200_000, distinct_names=True),
        chaos_corpus.many_attributes("attrs-one-element", 150_000),
        chaos_corpus.many_attributes("attrs-spread", 150_000, elements=1_000),
        chaos_corpus.long_text("long-text", 10_000_000),
    ],
    ids=lambda case: case.name,
)
def test_an_item_past_the_reader_bounds_fails_alone(case: chaos_corpus.MemoryCase) -> None:
    items = parse_feed(case.body, SRC).items
    assert [type(item).__name__ for item in items] == ["JobPosting", "ItemFailure", "JobPosting"]
    failure = items[1]
    assert isinstance(failure, ItemFailure)
    assert (failure.key, failure.stage) == (f"{case.name}-hostile", "parse")  # its guid came before the bound
    assert failure.reason == case.reason
    assert [item.external_id for item in items if isinstance(item, JobPosting)] == [f"{case.name}-good-1", f"{case.name}-good-2"]


@pytest.mark.parametrize(
    ("inside", "fails"),
    [
        ("<p>x</p>" * (MAX_ITEM_NODES - 2), False),  # item, guid and the rest: exactly at the bound
        ("<p>x</p>" * (MAX_ITEM_NODES - 1), True),
        ("<p " + " ".join(f'a{i}=""' for i in range(MAX_ITEM_NODES - 3)) + "/>", False),
        ("<p " + " ".join(f'a{i}=""' for i in range(MAX_ITEM_NODES - 2)) + "/>", True),
        (f"<description>{'d' * (MAX_ITEM_TEXT_CHARS - 1)}</description>", False),  # 1 character of guid
        (f"<description>{'d' * MAX_ITEM_TEXT_CHARS}</description>", True),
        (f"<p a='{'v' * (MAX_ITEM_TEXT_CHARS - 1)}'/>", False),  # attribute values count as text
        (f"<p a='{'v' * MAX_ITEM_TEXT_CHARS}'/>", True),
    ],
    ids=["nodes-at", "nodes-past", "attrs-at", "attrs-past", "text-at", "text-past", "value-at", "value-past"],
)
def test_the_item_bounds_are_exact(inside: str, fails: bool) -> None:
    """Elements and attributes of the item, the item itself included; characters of text and attribute values."""
    [item] = parse_feed(rss(f"<item><guid>g</guid>{inside}</item>"), SRC).items
    if fails:
        assert isinstance(item, ItemFailure) and item.reason.startswith("item too large: more than")
    else:  # past the reader, the description's own bound may still fail it: not the reader's
        assert isinstance(item, JobPosting) or not item.reason.startswith("item too large: more than"), item


def test_an_item_past_its_bound_before_its_guid_is_reported_by_position() -> None:
    payload = rss("<item><guid>a</guid></item><item>" + "<p>x</p>" * MAX_ITEM_NODES + "<guid>late</guid></item>")
    first, failure = parse_feed(payload, SRC).items
    assert isinstance(first, JobPosting)
    assert isinstance(failure, ItemFailure) and failure.key == "item[1]"


def test_an_item_with_too_many_attributes_on_itself_fails_alone() -> None:
    attributes = " ".join(f'a{i}="v"' for i in range(MAX_ITEM_NODES))
    failure, fine = parse_feed(rss(f"<item {attributes}><guid>g</guid></item><item><guid>ok</guid></item>"), SRC).items
    assert isinstance(failure, ItemFailure) and failure.key == "item[0]" and "elements and attributes" in failure.reason
    assert isinstance(fine, JobPosting)


def test_text_between_items_is_neither_kept_nor_counted() -> None:
    """Whitespace (or anything) between items belongs to no item: it must not fail the next one."""
    spacer = " " * (MAX_ITEM_TEXT_CHARS + 10)
    items = parse_feed(rss(f"<item><guid>a</guid></item>{spacer}<item><guid>b</guid></item>{spacer}"), SRC).items
    assert [item.external_id for item in items if isinstance(item, JobPosting)] == ["a", "b"]


def test_a_channel_element_past_the_bound_is_ignored_not_fatal() -> None:
    """A channel's ``<title>`` or ``<image>`` is read at item depth too: past a bound it is dropped, the feed goes on."""
    payload = rss("<item><guid>a</guid></item>").replace(b"<title>T</title>", b"<image>" + b"<p>x</p>" * MAX_ITEM_NODES
                                                         + b"</image><title>" + b"t" * (MAX_ITEM_TEXT_CHARS + 1) + b"</title>")
    parsed = parse_feed(payload, SRC)
    assert parsed.title == "" and [type(item) for item in parsed.items] == [JobPosting]


def test_a_lane_skips_an_oversized_item_of_another_lane_without_building_it() -> None:
    """A parse lane walks past the items of the other lane: an oversized one there costs it nothing and is not its failure."""
    payload = chaos_corpus.wide_item("lanes", 300_000).body
    seen: list[JobPosting | ItemFailure | None] = []

    def keep(item: JobPosting | ItemFailure | None) -> bool:
        seen.append(item)
        return True

    feed.stream_feed(payload, SRC, "", keep, wanted=lambda seq: seq != 1)
    assert [type(item).__name__ for item in seen] == ["JobPosting", "NoneType", "JobPosting"]


def test_an_expat_out_of_memory_error_is_a_memory_error_not_a_feed_error() -> None:
    """Under the parse process's memory limit expat reports 'out of memory' as a parse error: it is the limit's failure."""
    error = expat.ExpatError("out of memory: line 1, column 0")
    error.code = expat.errors.codes[expat.errors.XML_ERROR_NO_MEMORY]
    with pytest.raises(MemoryError):
        guard._parse_error(b"<rss/>", error)
    error.code = expat.errors.codes[expat.errors.XML_ERROR_SYNTAX]
    assert isinstance(guard._parse_error(b"<rss/>", error), FeedError)
