"""The chunked parse: same postings as parse_feed, in bounded chunks, with a cap on items."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from models.envelopes import partition_of
from models.feed import FeedError, ItemFailure, JobPosting, parse_feed
from models.feedstream import (
    LANE_ITEMS,
    FeedSummary,
    LaneMerge,
    Row,
    decode_chunk,
    decode_summary,
    encode_summary,
    in_lane,
    items_cap_reason,
    oversized,
    parse_in_chunks,
    posting_row,
    tail_failure,
)
from models.postings import posting_json

FEEDS = Path(__file__).resolve().parents[3] / "shared" / "feeds"
SRC = "https://feeds.example/jobs.xml"


def big_feed(n: int, bad_every: int = 0) -> bytes:
    def items() -> Iterator[str]:
        for i in range(n):
            if bad_every and i % bad_every == 0:
                yield f"<item><title>no id {i}</title></item>"
            else:
                yield (f"<item><title>Engineer {i}</title><guid>g-{i}</guid><description>Job {i}</description>"
                       "<pubDate>Mon, 06 Jan 2025 10:00:00 +0000</pubDate></item>")
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>Big</title>' + "".join(items())
            + "</channel></rss>").encode()


def collect(payload: bytes, **kwargs: object) -> tuple[list[bytes], FeedSummary]:
    chunks: list[bytes] = []
    options: dict[str, object] = {"max_items": 1_000_000, "clock": time.monotonic, **kwargs}
    summary = parse_in_chunks(payload, SRC, "Example", emit=chunks.append, **options)  # type: ignore[arg-type]
    return chunks, summary


def rows_of(chunks: list[bytes]) -> list[Row]:
    return list(itertools.chain.from_iterable(decode_chunk(chunk)[1] for chunk in chunks))


def expected_rows(payload: bytes) -> list[Row]:
    """What parse_feed says, in the chunk row shape."""
    rows: list[Row] = []
    for seq, item in enumerate(parse_feed(payload, SRC, "Example").items):
        if isinstance(item, JobPosting):
            rows.append(posting_row(seq, posting_json(item), 0))
        else:
            assert isinstance(item, ItemFailure)
            rows.append((seq, item.key, item.reason, item.stage))
    return rows


@pytest.mark.parametrize("name", ["wp-job-manager.rss.xml", "careers.atom.xml", "higher-ed.rss.xml"])
def test_chunks_carry_exactly_what_parse_feed_finds(name: str) -> None:
    payload = (FEEDS / name).read_bytes()
    chunks, summary = collect(payload, chunk_items=7)
    assert rows_of(chunks) == expected_rows(payload)  # same fields, dedupe keys and fingerprints
    parsed = parse_feed(payload, SRC, "Example")
    assert summary == FeedSummary(parsed.kind, parsed.title, len(parsed.items), None)
    assert all(len(decode_chunk(chunk)[1]) <= 7 for chunk in chunks)


def test_a_big_feed_streams_in_bounded_chunks_with_failures_in_place() -> None:
    payload = big_feed(20_000, bad_every=1000)
    chunks, summary = collect(payload)
    assert summary.items == 20_000 and summary.stopped is None
    rows = rows_of(chunks)
    assert [row[0] for row in rows] == list(range(20_000))
    assert sum(len(row) == 4 for row in rows) == 20 and rows[0][2] == "missing guid and link"
    assert len(chunks) == 40 and max(len(decode_chunk(c)[1]) for c in chunks) == 500
    assert [decode_chunk(c)[0] for c in chunks] == list(range(500, 20_001, 500))  # handed_out so far
    assert rows == expected_rows(payload)


def test_chunks_are_emitted_while_the_parse_goes_on() -> None:
    """The first chunk leaves before the document is finished: nobody holds every item.

    Progress is counted, not timed: the clock is read once per item handed out, so the number of
    reads when the first chunk leaves tells how far the parse had got.
    """
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        return 0.0

    reads_at_emit: list[int] = []
    summary = parse_in_chunks(big_feed(20_000), SRC, "", max_items=1_000_000, clock=clock,
                              emit=lambda chunk: reads_at_emit.append(reads))
    assert summary.items == 20_000
    assert len(reads_at_emit) == 40
    assert reads_at_emit[0] < reads / 20, (reads_at_emit[0], reads)
    assert reads_at_emit == sorted(reads_at_emit) and len(set(reads_at_emit)) == 40


def test_large_descriptions_make_smaller_chunks() -> None:
    items = "".join(f"<item><guid>{i}</guid><description>{'d' * 100_000}</description></item>" for i in range(30))
    chunks, _ = collect(f"<rss><channel>{items}</channel></rss>".encode())
    assert max(len(decode_chunk(c)[1]) for c in chunks) <= 10 and len(rows_of(chunks)) == 30


def test_slow_items_are_flushed_on_time() -> None:
    ticks = itertools.count(step=1.0)  # a clock where every item takes a second
    chunks, _ = collect(big_feed(5), clock=lambda: float(next(ticks)))
    assert len(chunks) == 5


def test_the_cap_keeps_the_first_items_and_says_why() -> None:
    chunks, summary = collect(big_feed(1_000), max_items=300, chunk_items=128)
    rows = rows_of(chunks)
    assert [row[0] for row in rows] == list(range(300))
    assert summary.items == 300 and summary.stopped == items_cap_reason(300)
    assert summary.stopped == "feed has more than 300 items (MAX_ITEMS_PER_FEED): the rest were not imported"
    _, exact = collect(big_feed(300), max_items=300)
    assert exact.stopped is None and exact.items == 300


def test_a_million_items_under_a_cap_end_in_bounded_time() -> None:
    payload = b'<rss version="2.0"><channel>' + b"<item><guid>x</guid></item>" * 1_000_000 + b"</channel></rss>"
    started = time.perf_counter()
    chunks, summary = collect(payload, max_items=1_000)
    assert time.perf_counter() - started < 5.0
    assert summary.items == 1_000 and summary.stopped is not None and len(rows_of(chunks)) == 1_000


def test_only_keeps_the_listed_items_but_counts_all() -> None:
    payload = big_feed(2_000, bad_every=500)
    chunks, summary = collect(payload, only={0, 7, 1999})
    expected = expected_rows(payload)
    assert rows_of(chunks) == [expected[0], expected[7], expected[1999]]
    assert summary.items == 2_000


def test_a_broken_document_emits_nothing() -> None:
    emitted: list[bytes] = []
    with pytest.raises(FeedError, match="^XML parse error: "):
        parse_in_chunks(big_feed(2_000)[:-100], SRC, "", max_items=10, emit=emitted.append, clock=time.monotonic)
    assert emitted == []


def test_summary_round_trip_and_tail_failure() -> None:
    summary = FeedSummary("atom", "Careers", 12, "why")
    assert decode_summary(encode_summary(summary)) == summary
    assert tail_failure(12, "why") == {"seq": 12, "outcome": "failed", "key": "item[12]", "reason": "why", "stage": "parse"}
    with pytest.raises(ValueError):
        decode_chunk(encode_summary(summary))


def test_a_posting_too_large_for_a_message_is_one_failed_item() -> None:
    small = "<item><title>Small</title><guid>s</guid><description>short</description></item>"
    # 30,000 non-ASCII characters: 60 kB as UTF-8, 180 kB with every character escaped.
    large = f"<item><title>Large</title><guid>l</guid><description>{'é' * 30_000}</description></item>"
    payload = f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{small}{large}{small}</channel></rss>'.encode()
    chunks, summary = collect(payload, max_posting_bytes=100_000)
    rows = rows_of(chunks)
    assert summary.items == 3 and [len(row) for row in rows] == [3, 4, 3]
    seq, key, reason, stage = rows[1]
    assert (seq, key, stage) == (1, "l", "publish")
    assert reason.startswith("posting too large for the broker: 180,") and "limit 100,000" in reason
    # Without a limit (or under a large one) the same posting goes through.
    assert [len(row) for row in rows_of(collect(payload, max_posting_bytes=200_000)[0])] == [3, 3, 3]


def test_oversized_bounds_any_codec_and_is_cheap_when_clearly_small() -> None:
    doc = {"title": "t", "description": "\U0001F600" * 1000, "categories": ["a", "b"]}
    encoded = len(orjson.dumps(doc))
    size = oversized(doc, encoded, 5_000)
    assert size is not None and size >= len(json.dumps(doc, ensure_ascii=False).encode()), "escaped size bounds UTF-8"
    assert oversized(doc, encoded, 20_000) is None
    small = {"title": "x" * 100}
    assert oversized(small, len(orjson.dumps(small)), 10_000) is None


@pytest.mark.parametrize("text", ["\x00\x1f" * 300, "\u00e9" * 500, "\u20ac\u2028" * 300, "\U0001F600" * 400, 'a"\\' * 300])
def test_oversized_never_passes_a_posting_over_the_limit_unmeasured(text: str) -> None:
    """The cheap bound (6 bytes escaped per byte of compact UTF-8 JSON) holds for the worst characters."""
    doc = {"title": text, "categories": [text[:50]], "description": text}
    escaped = len(json.dumps(doc))
    for limit in range(escaped - 200, escaped + 200, 7):
        size = oversized(doc, len(orjson.dumps(doc)), limit)
        assert (size is not None) == (escaped > limit)


def test_posting_rows_carry_the_partition_of_their_key() -> None:
    rows = rows_of(collect(big_feed(200), partitions=8)[0])
    assert {row[2] for row in rows} == set(range(8))
    assert all(row[2] == partition_of(orjson.loads(row[1])["dedupeKey"], 8) for row in rows)


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_share_the_items_and_merge_back_to_the_whole_parse_in_order(lanes: int) -> None:
    """Each lane normalises its blocks only; merged by LaneMerge, the rows are the single parse's, in item order."""
    payload = big_feed(LANE_ITEMS * 5 + 123, bad_every=7)
    whole = rows_of(collect(payload, partitions=8)[0])
    merge = LaneMerge(lanes)
    per_lane = []
    for lane in range(lanes):
        chunks: list[bytes] = []
        summary = parse_in_chunks(payload, SRC, "Example", max_items=1_000_000, emit=chunks.append, clock=time.monotonic,
                                  partitions=8, lane=(lane, lanes))
        assert summary.items == len(whole)
        decoded = [decode_chunk(chunk) for chunk in chunks]
        assert all(in_lane(row[0], (lane, lanes)) for _, rows in decoded for row in rows)
        per_lane.append((decoded, summary.items))
    released: list[Row] = []
    # Interleave the lanes' chunks unevenly: lane 0 runs far ahead, the others trickle in.
    queues = [list(decoded) for decoded, _ in per_lane]
    while any(queues):
        for lane, queue in enumerate(queues):
            for _ in range(3 if lane == 0 else 1):
                if queue:
                    walked, rows = queue.pop(0)
                    released.extend(merge.add(lane, walked, rows))
    for lane, (_, items) in enumerate(per_lane):
        released.extend(merge.end(lane, items))
    assert released == whole and merge.frontier == len(whole)


def test_a_lane_merge_releases_only_what_every_lane_got_past() -> None:
    merge = LaneMerge(2)
    assert merge.add(0, 4, [(0, b"a", 0), (2, b"c", 0)]) == [], "lane 1 has walked nothing yet"
    assert merge.behind(range(2)) == 1
    assert merge.add(1, 3, [(1, b"b", 0)]) == [(0, b"a", 0), (1, b"b", 0), (2, b"c", 0)]
    assert merge.frontier == 3 and merge.behind(range(2)) == 1 and merge.behind([0]) == 0
    assert merge.add(1, 6, [(3, "k", "bad item", "parse"), (5, b"f", 1)]) == [(3, "k", "bad item", "parse")]
    assert merge.end(0, 6) == [(5, b"f", 1)] and merge.frontier == 6


def test_a_repair_in_a_lane_normalises_only_the_listed_items_of_that_lane() -> None:
    payload = big_feed(LANE_ITEMS * 2)
    chunks: list[bytes] = []
    parse_in_chunks(payload, SRC, "", max_items=1_000_000, emit=chunks.append, clock=time.monotonic,
                    only={1, LANE_ITEMS + 1}, lane=(1, 2))
    assert [row[0] for row in rows_of(chunks)] == [LANE_ITEMS + 1]
