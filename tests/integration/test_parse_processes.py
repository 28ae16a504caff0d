"""The parse process pool for real: streaming, deadline, crash, reuse, shutdown, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents import parsing
from agents.parsing import LanedParse, ParseFailed, ParseJob, ParserPool, PoolClosed
from deploy import chaos_corpus
from models.feed import FeedError, ItemFailure, JobPosting, parse_feed
from models.feedstream import LANE_ITEMS, Row, items_cap_reason, posting_row
from models.postings import posting_json

REPO = Path(__file__).resolve().parents[2]
FEEDS = REPO.parent / "shared" / "feeds"
SRC = "https://feeds.example/jobs.xml"


def big_feed(n: int) -> bytes:
    item = ("<item><title>Engineer {i}</title><guid>g-{i}</guid><description>&lt;p&gt;Job&lt;/p&gt; {i}</description>"
            "<category>A</category><pubDate>Mon, 06 Jan 2025 10:00:00 +0000</pubDate></item>")
    return ('<rss version="2.0"><channel><title>Big</title>' + "".join(item.format(i=i) for i in range(n))
            + "</channel></rss>").encode()


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan reaped late by init is dead for our purpose)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def collect(pool: ParserPool, payload: bytes, **kwargs: object) -> tuple[list[Row], object, int]:
    rows: list[Row] = []
    async with pool.parse(payload, SRC, "Example", **kwargs) as job:  # type: ignore[arg-type]
        async for chunk in job:
            rows.extend(chunk)
    return rows, job.summary, job.handed_out


@pytest.fixture
async def pool() -> ParserPool:
    return ParserPool(processes=2, timeout_seconds=30.0, max_items=1_000_000)


async def test_a_feed_parsed_in_a_process_is_exactly_parse_feed(pool: ParserPool) -> None:
    payload = (FEEDS / "wp-job-manager.rss.xml").read_bytes()
    try:
        rows, summary, handed_out = await collect(pool, payload)
        expected: list[Row] = []
        for seq, item in enumerate(parse_feed(payload, SRC, "Example").items):
            expected.append(posting_row(seq, posting_json(item), 0) if isinstance(item, JobPosting)
                            else (seq, item.key, item.reason, item.stage) if isinstance(item, ItemFailure) else ())
        assert rows == expected and handed_out == len(expected) == 40
        first = pool.pids()
        assert len(first) == 1
        await collect(pool, payload)
        assert pool.pids() == first, "a child that finished cleanly is reused"
    finally:
        await pool.close()
    assert not any(running(pid) for pid in first)


def job_feed(n: int) -> bytes:
    job = ("<job><title><![CDATA[Engineer {i}]]></title><referencenumber>r-{i}</referencenumber><company>ACME</company>"
           "<city>Lyon</city><country>FR</country><date>Mon, 06 Jan 2025 10:00:00 +0000</date></job>")
    return ("<source><publisher>P</publisher>" + "".join(job.format(i=i) for i in range(n)) + "</source>").encode()


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_job_xml_feed_takes_the_same_process_path_with_its_format_and_mapping(
        monkeypatch: pytest.MonkeyPatch, lanes: int) -> None:
    payload = job_feed(1_200)
    mapping = {"item": "job", "fields": {"externalId": "referencenumber", "title": "title", "location": ["city", "country"]}}
    monkeypatch.setattr(parsing, "SPLIT_BYTES", len(payload) if lanes == 2 else len(payload) + 1)
    pool = ParserPool(processes=2, timeout_seconds=30.0, max_items=1_000)
    try:
        rows, summary, handed_out = await collect(pool, payload, feed_format="xml", mapping=mapping)
    finally:
        await pool.close()
    expected = parse_feed(payload, SRC, "Example", feed_format="xml", mapping=mapping).items[:1_000]
    assert rows == [posting_row(seq, posting_json(item), 0) for seq, item in enumerate(expected) if isinstance(item, JobPosting)]
    assert summary is not None and (summary.kind, summary.stopped) == ("xml", items_cap_reason(1_000))
    assert handed_out == 1_000


async def test_a_feed_error_is_clean_and_keeps_the_child(pool: ParserPool) -> None:
    try:
        for payload, message in ((b"", "empty body"), (b"<!---->" * 20_000 + b"<rss>", "XML parse error: no element found"),
                                 (b'<!DOCTYPE rss [<!ATTLIST item a CDATA "x">]><rss/>', "refused: XML has an internal DTD subset")):
            with pytest.raises(FeedError, match=f"^{message}"):
                await collect(pool, payload)
        assert len(pool.pids()) == 1
    finally:
        await pool.close()


async def test_the_deadline_kills_the_parse_and_a_fresh_child_takes_the_next_feed() -> None:
    pool = ParserPool(processes=1, timeout_seconds=0.5, max_items=1_000_000)
    try:
        await collect(pool, big_feed(10))
        [pid] = pool.pids()
        started = time.monotonic()
        with pytest.raises(ParseFailed, match=r"^parse timed out after 0.5s \(PARSE_TIMEOUT_SECONDS\)$") as info:
            await collect(pool, big_feed(300_000))  # about 10 s of parsing
        assert time.monotonic() - started < 3.0
        assert info.value.handed_out % 500 == 0  # whole chunks only: what was received, was published
        assert not running(pid) and pool.pids() == []
        rows, _, _ = await collect(pool, big_feed(10))
        assert len(rows) == 10 and pool.pids() != [pid]
    finally:
        await pool.close()


async def test_time_spent_by_the_consumer_is_not_charged_to_the_deadline() -> None:
    """A slow publisher does not make a big feed time out: only waiting for the parser counts."""
    pool = ParserPool(processes=1, timeout_seconds=3.0, max_items=1_000_000)
    try:
        async with pool.parse(big_feed(20_000), SRC, "") as job:
            async for _chunk in job:
                await asyncio.sleep(0.1)  # 40 chunks: 4 s of "publishing", more than the deadline
        assert job.summary is not None and job.summary.items == 20_000 and job.waited < 3.0
    finally:
        await pool.close()


async def test_a_child_that_dies_is_reported_and_replaced() -> None:
    pool = ParserPool(processes=1, timeout_seconds=30.0, max_items=1_000_000)
    try:
        with pytest.raises(ParseFailed, match=r"^parser process died \(exit code -9\)$"):
            async with pool.parse(big_feed(300_000), SRC, "") as job:
                async for _chunk in job:
                    os.kill(pool.pids()[0], signal.SIGKILL)
        rows, _, _ = await collect(pool, big_feed(3))
        assert len(rows) == 3
    finally:
        await pool.close()


async def test_the_cap_and_the_event_loop_while_a_big_feed_parses() -> None:
    pool = ParserPool(processes=1, timeout_seconds=60.0, max_items=50_000)
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append(loop.time() - due)

    payload = big_feed(60_000)
    watcher = asyncio.create_task(watch())
    try:
        rows, summary, handed_out = await collect(pool, payload)
    finally:
        stop.set()
        await watcher
        await pool.close()
    assert len(rows) == handed_out == 50_000
    assert summary is not None and "more than 50,000 items (MAX_ITEMS_PER_FEED)" in str(summary.stopped)  # type: ignore[attr-defined]
    print(f"max event-loop lag while parsing 50,000 items in a child: {max(lags) * 1000:.1f} ms")
    assert max(lags) < 0.25  # measured 40-100 ms (garbage collection of the parent's heap, not parsing)


async def test_the_pool_is_bounded_and_close_kills_every_child() -> None:
    pool = ParserPool(processes=2, timeout_seconds=30.0, max_items=1_000_000)
    seen: set[int] = set()

    async def one() -> None:
        async with pool.parse(big_feed(30_000), SRC, "") as job:
            async for _chunk in job:
                seen.update(pool.pids())
                assert len(pool.pids()) <= 2

    tasks = [asyncio.create_task(one()) for _ in range(4)]
    await asyncio.sleep(0.5)
    pids = pool.pids()
    assert len(pids) == 2
    await pool.close()  # while jobs are running: they are abandoned (not failed), nothing is left behind
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, PoolClosed) and not isinstance(r, ParseFailed) for r in results), results
    assert not any(running(pid) for pid in seen | set(pids))
    with pytest.raises(PoolClosed, match="closed"):
        await collect(pool, big_feed(1))


async def test_a_stop_signal_to_the_process_group_leaves_the_parse_to_the_worker() -> None:
    """``make stop`` signals the worker's whole group: the parse process died first (even while it was still
    starting), and the run in flight was recorded as a failed parse ("parser process died (exit code -15)")
    instead of going to the next worker. Children run in a session of their own."""
    pool = ParserPool(processes=1, timeout_seconds=30.0, max_items=1_000_000)
    try:
        rows: list[Row] = []
        async with pool.parse(big_feed(20_000), SRC, "") as job:
            async for chunk in job:
                child = pool.pids()[0]
                assert os.getpgid(child) != os.getpgid(0) and os.getsid(child) != os.getsid(0)
                rows.extend(chunk)
        assert len(rows) == 20_000 and job.summary is not None
    finally:
        await pool.close()


async def test_a_big_feed_is_parsed_by_two_processes_and_its_rows_come_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two lanes (every other block of items each), merged: exactly the single process's rows, in item order."""
    payload = big_feed(LANE_ITEMS * 7 + 77)
    single = ParserPool(processes=1, timeout_seconds=30.0, max_items=1_000_000, partitions=8)
    try:
        expected, expected_summary, _ = await collect(single, payload)
    finally:
        await single.close()
    monkeypatch.setattr(parsing, "SPLIT_BYTES", len(payload))
    pool = ParserPool(processes=2, timeout_seconds=30.0, max_items=1_000_000, partitions=8)
    try:
        chunks: list[list[Row]] = []
        async with pool.parse(payload, SRC, "Example") as job:
            assert isinstance(job, LanedParse) and len(pool.pids()) == 2
            async for chunk in job:
                chunks.append(chunk)
                assert [row[0] for row in chunk] == sorted(row[0] for row in chunk)
        rows = [row for chunk in chunks for row in chunk]
        assert rows == expected and job.summary == expected_summary and job.handed_out == len(expected)
        pids = pool.pids()
        monkeypatch.setattr(parsing, "SPLIT_BYTES", len(payload) + 1)
        async with pool.parse(payload, SRC, "Example") as small:  # one byte below the threshold: one process
            assert isinstance(small, ParseJob)
            async for _chunk in small:
                pass
        assert pool.pids() == pids, "both lanes' processes ended well and were kept"
    finally:
        await pool.close()


async def test_a_lane_that_dies_fails_the_parse_with_only_what_both_lanes_got_past(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsing, "SPLIT_BYTES", 1)
    pool = ParserPool(processes=2, timeout_seconds=30.0, max_items=1_000_000)
    rows: list[Row] = []
    killed: list[int] = []
    try:
        with pytest.raises(ParseFailed, match=r"^parser process died \(exit code -9\)$") as info:
            async with pool.parse(big_feed(300_000), SRC, "") as job:
                async for chunk in job:
                    rows.extend(chunk)
                    if len(rows) >= 3 * LANE_ITEMS and not killed:
                        killed.append(pool.pids()[1])
                        os.kill(killed[0], signal.SIGKILL)
        assert [row[0] for row in rows] == list(range(len(rows))), "no gap, no item out of order"
        assert info.value.handed_out == len(rows), "handed out = every item below the merge's frontier"
        assert len(pool.pids()) <= 1, "the killed lane is gone, the other lane's process was not left mid-job"
        again, _, _ = await collect(pool, big_feed(3))
        assert len(again) == 3
    finally:
        await pool.close()


async def test_a_child_ahead_of_its_reader_is_killed_without_waiting_forever() -> None:
    """The child fills its pipe and the reader's buffer while the poller is busy; then the poller fails.

    asyncio reports the child's exit only once its stdout is closed, which a paused (full) reader
    never is: the kill must not wait for that forever (it did, and a worker stopping would hang).
    """
    pool = ParserPool(processes=1, timeout_seconds=30.0, max_items=1_000_000)
    try:
        async with asyncio.timeout(20):
            with pytest.raises(RuntimeError, match="publishing failed"):
                async with pool.parse(big_feed(300_000), SRC, "") as job:
                    async for _chunk in job:
                        await asyncio.sleep(1.0)  # the child parses ahead until its pipe and our buffer are full
                        raise RuntimeError("publishing failed")
        assert pool.pids() == []
    finally:
        await pool.close()


def test_importing_the_worker_modules_starts_no_process() -> None:
    """FAUST-NOTES #7: processes start on first use, never at import."""
    code = textwrap.dedent("""
        import pathlib
        import agents, agents.parsing, agents.parse_child, agents.poller, streams.worker, models.feedstream
        from agents.parsing import ParserPool
        ParserPool(processes=2, timeout_seconds=1, max_items=1)
        children = [c for t in pathlib.Path('/proc/self/task').iterdir() for c in (t / 'children').read_text().split()]
        print('children', children)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    assert "children []" in out.stdout, out.stdout + out.stderr


def test_children_die_with_a_killed_parent() -> None:
    """SIGKILL of the worker: its parse processes go too (PR_SET_PDEATHSIG), none keeps parsing."""
    code = textwrap.dedent("""
        import asyncio, sys
        from agents.parsing import ParserPool
        from tests.integration.test_parse_processes import big_feed
        async def main():
            pool = ParserPool(processes=2, timeout_seconds=600, max_items=10**7)
            async def parse():
                async with pool.parse(big_feed(1_000_000), "u", "") as job:
                    async for _ in job:
                        await asyncio.sleep(10)  # hold the child (parsing ahead) while the parent is killed
            task = asyncio.create_task(parse())
            while not pool.pids():
                await asyncio.sleep(0.05)
            print("child", pool.pids()[0], flush=True)
            await task
        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        child = int(line.split()[1])
        assert running(child)
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 10
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child)


# --------------------------------------------------------------------------- PARSE_MAX_MEMORY_MB (issue 22)

LIMIT_MB = 192


def address_space_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


def test_reasons_name_the_memory_limit() -> None:
    assert parsing.memory_reason(512).startswith("parser exceeded PARSE_MAX_MEMORY_MB=512")
    assert parsing.death_reason(parsing.EXIT_OUT_OF_MEMORY, 512) == parsing.memory_reason(512)
    assert "likely out of memory; PARSE_MAX_MEMORY_MB=512" in parsing.death_reason(-signal.SIGKILL, 512)
    assert parsing.death_reason(-signal.SIGKILL, None) == "parser process died (exit code -9)"
    assert parsing.death_reason(1, 512) == "parser process died (exit code 1)"


async def test_each_child_runs_under_the_memory_limit() -> None:
    pool = ParserPool(processes=1, timeout_seconds=30.0, max_items=1_000_000, max_memory_mb=LIMIT_MB)
    try:
        rows, _, _ = await collect(pool, big_feed(1000))
        assert len(rows) == 1000
        [pid] = pool.pids()
        assert address_space_limit(pid) == LIMIT_MB * 1024 * 1024
        assert 0 < pool.peak_rss <= LIMIT_MB * 1024 * 1024
    finally:
        await pool.close()


async def test_a_parse_past_the_memory_limit_fails_naming_it_and_the_child_is_replaced() -> None:
    """One start tag of 2,000,000 attributes: pyexpat builds all of it before any handler, so only the limit stops it."""
    case = chaos_corpus.past_memory_limit("limit", 2_000_000, LIMIT_MB)
    peaks: list[int] = []
    pool = ParserPool(processes=1, timeout_seconds=60.0, max_items=1_000_000, max_memory_mb=LIMIT_MB, on_peak_rss=peaks.append)
    try:
        await collect(pool, big_feed(3))
        [pid] = pool.pids()
        with pytest.raises(ParseFailed, match=rf"^parser exceeded PARSE_MAX_MEMORY_MB={LIMIT_MB}: ") as info:
            await collect(pool, case.body)
        assert info.value.handed_out <= 1  # at most the good item before it, whose chunk may have gone out
        assert not running(pid) and pool.pids() == []
        print(f"\npeak RSS of the parse process: {pool.peak_rss / 2**20:.1f} MiB (limit {LIMIT_MB} MiB)")
        assert pool.peak_rss > 100 * 1024 * 1024, "the feed did use memory: the limit, not something else, stopped it"
        assert pool.peak_rss <= LIMIT_MB * 1024 * 1024
        assert peaks and peaks[-1] == pool.peak_rss
        rows, _, _ = await collect(pool, big_feed(3))  # a fresh child takes the next feed
        assert len(rows) == 3 and pool.pids() != [pid]
    finally:
        await pool.close()


async def test_a_child_out_of_memory_while_reading_the_payload_names_the_limit() -> None:
    """A payload larger than what the limit leaves after start-up (about 32 MiB): the child exits EXIT_OUT_OF_MEMORY."""
    pool = ParserPool(processes=1, timeout_seconds=60.0, max_items=1_000_000, max_memory_mb=64)
    try:
        with pytest.raises(ParseFailed, match=r"^parser exceeded PARSE_MAX_MEMORY_MB=64: "):
            await collect(pool, b" " * (48 * 1024 * 1024) + big_feed(3))
        rows, _, _ = await collect(pool, big_feed(3))
        assert len(rows) == 3
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "case",
    [chaos_corpus.wide_item("wide", 2_000_000), chaos_corpus.wide_item("wide-names", 1_000_000, distinct_names=True),
     chaos_corpus.many_attributes("attrs", 300_000, elements=100), chaos_corpus.long_text("text", 30_000_000)],
    ids=lambda case: case.name,
)
async def test_hostile_items_fail_alone_in_a_child_well_under_the_limit(case: chaos_corpus.MemoryCase) -> None:
    pool = ParserPool(processes=1, timeout_seconds=60.0, max_items=1_000_000, max_memory_mb=LIMIT_MB)
    try:
        rows, summary, _ = await collect(pool, case.body)
        print(f"\n{case.name}: {len(case.body) / 2**20:.1f} MiB feed, parse process peak RSS {pool.peak_rss / 2**20:.1f} MiB")
        assert [len(row) for row in rows] == [3, 4, 3]  # posting, failure, posting
        assert rows[1][1:] == (f"{case.name}-hostile", case.reason, "parse")
        assert pool.peak_rss <= LIMIT_MB * 1024 * 1024
    finally:
        await pool.close()
