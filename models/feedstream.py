"""One feed's parse as a stream of compact chunks: what a parse process sends the worker.

Pure code (the clock and the output are passed in). The parse process (``agents/parse_child.py``)
runs :func:`parse_in_chunks`, which hands each chunk of a few hundred normalised items to
``emit`` as bytes while the parse goes on; the worker decodes each with :func:`decode_chunk` and
publishes it before the next arrives, so neither process ever holds a whole big feed's items.

Encoding: ``marshal`` (stdlib) of ``(FORMAT, handed_out, rows)``. A posting row is
``(seq, json, partition)``: the posting as ``jobs.parsed`` carries it, already encoded (UTF-8 JSON
bytes of :func:`models.postings.posting_json` plus ``seq``, so its fields, dedupe key and
fingerprint are exactly those of :func:`models.feed.parse_feed`), and the partition of its dedupeKey
(:func:`models.envelopes.partition_of`). Both are computed here, off the worker's core: the worker
only joins the bytes of one partition into an envelope, and never decodes or re-encodes a posting
(decoding the chunk's dicts and encoding them again were a tenth of a worker's CPU). A failure row is
``(seq, key, reason, stage)``. ``handed_out`` counts the items parsed so far, failures and
rows left out by ``only`` included. Both ends are this same program, so marshal's lack of
validation is no trust boundary: it carries no code, only tuples, bytes and strings.
"""

from __future__ import annotations

import heapq
import json
import marshal
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from models.envelopes import partition_of
from models.feed import ItemFailure, JobPosting, stream_feed
from models.postings import posting_json
from models.runs import clip

__all__ = [
    "LANE_ITEMS",
    "WHOLE",
    "FeedSummary",
    "Lane",
    "LaneMerge",
    "Row",
    "decode_chunk",
    "decode_summary",
    "encode_summary",
    "in_lane",
    "items_cap_reason",
    "oversized",
    "parse_in_chunks",
    "posting_row",
    "tail_failure",
]

FORMAT = 2
CHUNK_ITEMS = 500
CHUNK_CHARS = 1_000_000  # flush earlier when descriptions are large: a chunk stays a few MB at most
FLUSH_SECONDS = 0.5  # and when items come slowly, so the worker sees progress (and the deadline sees it)

Row = tuple[Any, ...]
"""``(seq, json, partition)`` for a posting, ``(seq, key, reason, stage)`` for a failed item."""
Lane = tuple[int, int]  # (index, lanes): which share of a feed's items a parse process normalises
WHOLE: Lane = (0, 1)
LANE_ITEMS = CHUNK_ITEMS  # lanes take turns by blocks of this many items


@dataclass(frozen=True, slots=True)
class FeedSummary:
    """How a parse ended: feed kind and title, items handed out, and why it stopped early (if it did)."""

    kind: str
    title: str
    items: int
    stopped: str | None = None


def items_cap_reason(max_items: int) -> str:
    return f"feed has more than {max_items:,} items (MAX_ITEMS_PER_FEED): the rest were not imported"


def oversized(doc: dict[str, Any], encoded_bytes: int, limit: int) -> int | None:
    """The posting's size as JSON when it is over ``limit`` bytes, else None (cheap when clearly below).

    The size is measured with every non-ASCII character escaped, which bounds the UTF-8 size of any
    JSON codec's output from above, so a posting accepted here fits the broker's message limit.
    ``encoded_bytes`` is the length of the posting's compact UTF-8 JSON (its row): escaping writes at
    most 6 bytes per byte of that (a control character, a 2- or 3-byte character; an astral one is
    12 for 4), so only a posting within a sixth of the limit is measured.
    """
    if 6 * encoded_bytes + 4096 <= limit:
        return None
    size = len(json.dumps(doc))
    return size if size > limit else None


def too_large_reason(size: int, limit: int) -> str:
    return f"posting too large for the broker: {size:,} bytes as JSON (limit {limit:,}, from KAFKA_MAX_MESSAGE_BYTES)"


def parse_in_chunks(
    payload: bytes,
    source_url: str,
    source_name: str,
    *,
    max_items: int,
    emit: Callable[[bytes], None],
    clock: Callable[[], float],
    only: Collection[int] | None = None,
    max_posting_bytes: int | None = None,
    partitions: int = 1,
    lane: Lane = WHOLE,
    chunk_items: int = CHUNK_ITEMS,
    chunk_chars: int = CHUNK_CHARS,
    flush_seconds: float = FLUSH_SECONDS,
    feed_format: str = "auto",
    mapping: Mapping[str, Any] | None = None,
) -> FeedSummary:
    """Parse ``payload`` and ``emit`` its items in encoded chunks; stop after ``max_items`` items.

    ``only`` keeps just those sequence numbers (a repair republishes a few items); ``lane`` keeps the
    items of one lane (:func:`in_lane`): the items left out are counted, never normalised. A posting larger
    than ``max_posting_bytes`` as JSON becomes a failed item (stage ``publish``): the broker would
    refuse its message, and with it the whole chunk. ``partitions`` is the topic's partition count.
    ``feed_format`` and ``mapping`` are the feed's (SPEC §3a), as :func:`models.feed.stream_feed` takes them.
    Raises
    :class:`models.feed.FeedError` like :func:`models.feed.stream_feed`; chunks emitted before
    such an error stay valid (items are handed out only once the whole document is known to be
    well-formed, so this happens only for nesting deeper than ``MAX_DEPTH``).
    """
    rows: list[Row] = []
    count = chars = 0
    last_flush = clock()
    stopped: str | None = None

    def flush() -> None:
        nonlocal chars, last_flush
        if rows or lane != WHOLE:  # a lane reports how far it walked even when the block was another lane's
            emit(marshal.dumps((FORMAT, count, rows)))
            rows.clear()
        chars, last_flush = 0, clock()

    def on_item(item: JobPosting | ItemFailure | None) -> bool:
        nonlocal count, chars, stopped
        seq = count
        if seq >= max_items:
            stopped = items_cap_reason(max_items)
            return False
        count = seq + 1
        if item is not None:
            if isinstance(item, JobPosting):
                doc = posting_json(item)
                row = posting_row(seq, doc, partition_of(item.dedupe_key, partitions) if partitions > 1 else 0)
                size = None if max_posting_bytes is None else oversized(doc, len(row[1]), max_posting_bytes)
                if size is None:
                    rows.append(row)
                    chars += len(row[1])
                else:
                    reason = too_large_reason(size, max_posting_bytes or 0)
                    rows.append((seq, item.external_id or item.url or item.dedupe_key, reason, "publish"))
            else:
                rows.append((seq, item.key, item.reason, item.stage))
        if len(rows) >= chunk_items or chars >= chunk_chars or clock() - last_flush >= flush_seconds or (
                lane != WHOLE and count % LANE_ITEMS == 0):  # a lane's block ends: the worker may merge up to here
            flush()
        return True

    def wanted(seq: int) -> bool:
        return in_lane(seq, lane) and (only is None or seq in only)

    try:
        kind, title = stream_feed(payload, source_url, source_name, on_item,
                                  None if only is None and lane == WHOLE else wanted, feed_format=feed_format, mapping=mapping)
    finally:
        flush()
    return FeedSummary(kind, title, count, stopped)


def in_lane(seq: int, lane: Lane) -> bool:
    """Whether item ``seq`` is lane ``index``'s of ``lanes``: lanes take turns by blocks of ``LANE_ITEMS`` items.

    Several parse processes split a big feed this way, each walking the whole document (expat
    alone is a few µs an item) and normalising and encoding only its own blocks.
    """
    index, lanes = lane
    return lanes == 1 or (seq // LANE_ITEMS) % lanes == index


class LaneMerge:
    """The rows of a feed's lanes, put back in item order.

    Each lane's chunks come in item order and say how far the lane has walked (``handed_out``);
    every item below the smallest of those is in some chunk already, so rows below it are final
    and go out in order. So the postings of one partition keep the feed's order (the dedupe agent
    relies on it for a key seen twice), and a parse cut short has handed out exactly ``frontier``.
    """

    def __init__(self, lanes: int) -> None:
        self.walked = [0] * lanes
        self.pending: list[list[Row]] = [[] for _ in range(lanes)]

    def add(self, lane: int, walked: int, rows: list[Row]) -> list[Row]:
        """Take a chunk of ``lane``; return the rows now final, in item order."""
        self.walked[lane] = walked
        self.pending[lane].extend(rows)
        return self._release()

    def end(self, lane: int, items: int) -> list[Row]:
        """``lane`` has walked the whole feed (``items`` items); return the rows now final."""
        self.walked[lane] = max(items, self.walked[lane])
        return self._release()

    @property
    def frontier(self) -> int:
        """Items handed out: every item below this is final."""
        return min(self.walked)

    def behind(self, lanes: Iterable[int]) -> int:
        """Of ``lanes`` (those still running), the one to read from next: it has walked least (the others wait for it)."""
        return min(lanes, key=self.walked.__getitem__)

    def _release(self) -> list[Row]:
        frontier = self.frontier
        ready: list[list[Row]] = []
        for index, rows in enumerate(self.pending):
            cut = 0
            while cut < len(rows) and rows[cut][0] < frontier:
                cut += 1
            if cut:
                ready.append(rows[:cut])
                self.pending[index] = rows[cut:]
        if len(ready) == 1:
            return ready[0]
        return list(heapq.merge(*ready, key=itemgetter(0)))


def posting_row(seq: int, doc: dict[str, Any], partition: int) -> Row:
    """The row of a posting: its ``jobs.parsed`` JSON (``doc`` from ``posting_json``, with ``seq``) and partition."""
    return (seq, orjson.dumps({**doc, "seq": seq}), partition)


def decode_chunk(data: bytes) -> tuple[int, list[Row]]:
    """``(handed_out, rows)`` of one chunk; ValueError if it is not one."""
    decoded = marshal.loads(data)  # noqa: S302 - written by our own parse process (module docstring)
    if not (isinstance(decoded, tuple) and len(decoded) == 3 and decoded[0] == FORMAT
            and isinstance(decoded[1], int) and isinstance(decoded[2], list)):
        raise ValueError("not a parse chunk of this version")
    return decoded[1], decoded[2]


def encode_summary(summary: FeedSummary) -> bytes:
    return marshal.dumps((FORMAT, summary.kind, summary.title, summary.items, summary.stopped))


def decode_summary(data: bytes) -> FeedSummary:
    decoded = marshal.loads(data)  # noqa: S302 - written by our own parse process (module docstring)
    if not (isinstance(decoded, tuple) and len(decoded) == 5 and decoded[0] == FORMAT):
        raise ValueError("not a parse summary of this version")
    _, kind, title, items, stopped = decoded
    return FeedSummary(str(kind), str(title), int(items), None if stopped is None else str(stopped))


def tail_failure(seq: int, reason: str) -> dict[str, Any]:
    """The failed item that stands for the unread rest of a feed (cap, deadline, parser death)."""
    return {"seq": seq, "outcome": "failed", "key": f"item[{seq}]", "reason": clip(reason), "stage": "parse"}
