"""Feed parsing off the worker's event loop and core: a small pool of parse processes with a deadline.

A hostile or huge feed costs the worker nothing but waiting: the parse runs in a child process
(``agents/parse_child.py``), which streams normalised items back in chunks of a few hundred
(``models/feedstream.py``) while it parses; the poller publishes each chunk as it arrives, so
no process holds a whole big feed's items. The worker only reads the pipe (asyncio, no thread).

* Deadline: ``PARSE_TIMEOUT_SECONDS`` bounds the time the worker spends *waiting for the parser*
  (sending the job, waiting for each chunk and the end). Time the worker spends publishing a
  chunk does not count (the child parses ahead meanwhile, until the pipe is full), so a big
  feed is not cut short by a slow broker. Past the deadline the child is killed and replaced.
* Lanes: a feed of ``SPLIT_BYTES`` or more is given to two children when two are free, each
  normalising every other block of items (:class:`LanedParse`); the rows come back in item order.
* Pool: at most ``processes`` children; a free one is reused for the next feed, a killed or
  broken one is replaced on demand. Nothing starts at import or construction: the first
  parse starts the first child. :meth:`ParserPool.close` kills them all (the worker calls it on
  shutdown), and each child also dies with the worker (``PR_SET_PDEATHSIG``) if it is killed.
* Memory: ``PARSE_MAX_MEMORY_MB`` is each child's address-space limit (``RLIMIT_AS``, set by the child
  before its first job). A parse that needs more fails with a reason naming the limit (``M`` frame, or
  the child's exit code ``EXIT_OUT_OF_MEMORY``, or SIGKILL from the kernel's OOM killer) and the child
  is replaced; the worker, the broker and the store are not touched. The items handed out before stay
  published, as for a deadline. Each child's peak RSS (``VmHWM``) is read when a job ends and logged.

Protocol on the pipes: frames of ``kind`` (1 byte) + body length (4 bytes, big-endian) + body.
Worker → child: ``J`` ``marshal((source_url, source_name, (max_items, max_posting_bytes, partitions, lane, lanes), only,
(format, mapping)))`` (the feed's format and mapping as JSON values, SPEC §3a), then
``P`` the payload as it is (written in slices: a 500 MB feed is never copied in the worker).
Child → worker: ``C`` a chunk, ``E`` the summary (the end), ``F`` a feed error (its message,
for ``import_logs``), ``M`` out of memory (empty; the child waits to be replaced), ``X`` an internal
error (logged; the child exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from models.feed import FeedError
from models.feedstream import FeedSummary, LaneMerge, Row, decode_chunk, decode_summary
from models.text import printable

logger = logging.getLogger(__name__)
T = TypeVar("T")

JOB, PAYLOAD, CHUNK, END, FAILED, ERROR, OUT_OF_MEMORY = b"J", b"P", b"C", b"E", b"F", b"X", b"M"
EXIT_OUT_OF_MEMORY = 3  # the child's exit code when it ran out of memory reading a job's payload
WRITE_SLICE = 1024 * 1024
HEADER_BYTES = 5
MAX_FRAME_BYTES = 2**32 - 1
READ_LIMIT = 1024 * 1024  # the asyncio reader's buffer: a few chunks in flight per child
# A feed this large is parsed by two processes when two are free: a 1,000,000-posting feed (~500 MB)
# waited 64 s of its 83 s run for one parse process while a core sat partly idle. Below it the
# second process would cost more (it walks the whole document too) than the run waits.
SPLIT_BYTES = 16 * 1024 * 1024
MAX_LANES = 2


def default_processes() -> int:
    """Parse processes per worker: one per core, at most as many as the poller runs feeds at once (4)."""
    return max(1, min(4, os.cpu_count() or 1))


class ParseFailed(Exception):
    """The parse did not finish (deadline, crash, or a refusal after items were handed out).

    ``str()`` is the reason for ``import_logs``; ``handed_out`` is how many items the chunks
    received before it covered (those were published and are kept).
    """

    def __init__(self, message: str, handed_out: int = 0, waited: float = 0.0) -> None:
        super().__init__(message)
        self.handed_out = handed_out
        self.waited = waited


class PoolClosed(Exception):  # noqa: N818 - a signal, not a failure of the feed
    """The worker is stopping and killed its parse processes: the parse was abandoned, not failed.

    The caller records nothing about the run and leaves its command unacknowledged, so the worker
    that owns the partition next runs it again. (Reported as a failed parse, a graceful stop, a
    rolling deploy or a scale-down ended every run in flight as ``failed``, or ``partial`` with
    what was published so far, and nothing imported the rest.)
    """


def memory_reason(max_memory_mb: int | None) -> str:
    """The run's reason when its parse needed more memory than a parse process may have."""
    return f"parser exceeded PARSE_MAX_MEMORY_MB={max_memory_mb}: the feed needs more memory to parse than a parse process may use"


def death_reason(returncode: int | None, max_memory_mb: int | None) -> str:
    """The run's reason when its parse process died: named after the memory limit when memory is the likely cause."""
    if max_memory_mb is not None:
        if returncode == EXIT_OUT_OF_MEMORY:
            return memory_reason(max_memory_mb)
        if returncode == -signal.SIGKILL:  # not the limit (that is a MemoryError), but the OOM killer's signal
            return f"parser process died (exit code {returncode}: killed, likely out of memory; PARSE_MAX_MEMORY_MB={max_memory_mb})"
    return f"parser process died (exit code {returncode})"


def peak_rss_bytes(pid: int) -> int | None:
    """A live process's peak resident set (``VmHWM``), or None when it is gone or this is not Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def frame(kind: bytes, body: bytes) -> bytes:
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame body too large: {len(body)} bytes")
    return kind + len(body).to_bytes(4, "big") + body


def write_frame(out: BinaryIO, kind: bytes, body: bytes) -> None:
    out.write(frame(kind, body))


def read_frame(source: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame from a blocking stream, or None at a clean end of stream."""
    header = source.read(HEADER_BYTES)
    if not header:
        return None
    if len(header) != HEADER_BYTES:
        raise EOFError("truncated frame header")
    size = int.from_bytes(header[1:], "big")
    body = source.read(size)
    if len(body) != size:
        raise EOFError("truncated frame body")
    return header[:1], body


class _Child:
    """One parse process and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None  # noqa: S101 - created with PIPE
        self.stdin = process.stdin
        self.stdout = process.stdout

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        # Read stdout to its end first: asyncio wakes wait() only once every pipe of the child is closed,
        # and a child that ran ahead of its reader leaves stdout paused (its buffer full), never closed.
        # What is left is at most the pipe and the reader's buffer (READ_LIMIT), and is dropped.
        with contextlib.suppress(OSError, ValueError):
            await self.stdout.read()
        await self.process.wait()


class ParseJob:
    """One feed being parsed: iterate for chunks of rows; ``summary`` is set once it ended well.

    Iteration raises :class:`models.feed.FeedError` when the feed is unusable before any item
    (a clean failure with its reason) and :class:`ParseFailed` when the parser missed its
    deadline, died, or refused the document after some items were handed out.
    ``handed_out`` is how many items (sequence numbers) the chunks so far covered.
    """

    def __init__(self, child: _Child, timeout_seconds: float, max_memory_mb: int | None = None) -> None:
        self.child = child
        self._timeout_seconds = timeout_seconds
        self._max_memory_mb = max_memory_mb
        self.summary: FeedSummary | None = None
        self.handed_out = 0
        self.finished = False  # the child answered to the end and can take another job
        self.waited = 0.0

    async def _timed(self, step: Awaitable[T]) -> T:
        """Await a pipe operation against what is left of the deadline; the time spent is charged to it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(0.0, self._timeout_seconds - self.waited)):
                return await step
        except TimeoutError:
            raise ParseFailed(f"parse timed out after {self._timeout_seconds:g}s (PARSE_TIMEOUT_SECONDS)",
                              self.handed_out, self._timeout_seconds) from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            process = self.child.process
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await process.wait()
            raise ParseFailed(death_reason(process.returncode, self._max_memory_mb), self.handed_out, self.waited) from exc
        finally:
            self.waited += loop.time() - started

    async def _read(self) -> tuple[bytes, bytes]:
        header = await self._timed(self.child.stdout.readexactly(HEADER_BYTES))
        size = int.from_bytes(header[1:], "big")
        body = await self._timed(self.child.stdout.readexactly(size)) if size else b""
        return header[:1], body

    async def send(self, body: bytes, payload: bytes | bytearray) -> None:
        """The job, then its payload in slices (each drained), so the pipe's buffer never holds a copy of it."""
        stdin = self.child.stdin
        stdin.write(frame(JOB, body))
        stdin.write(PAYLOAD + len(payload).to_bytes(4, "big"))
        view = memoryview(payload)
        for start in range(0, len(payload), WRITE_SLICE):
            stdin.write(view[start:start + WRITE_SLICE])
            await self._timed(stdin.drain())
        await self._timed(stdin.drain())

    def __aiter__(self) -> AsyncIterator[list[Row]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[list[Row]]:
        while True:
            kind, body = await self._read()
            if kind == CHUNK:
                self.handed_out, rows = decode_chunk(body)
                yield rows
            elif kind == END:
                self.summary = decode_summary(body)
                self.finished = True
                return
            elif kind == OUT_OF_MEMORY:  # not finished: the child is replaced (its heap may be fragmented)
                raise ParseFailed(memory_reason(self._max_memory_mb), self.handed_out, self.waited)
            elif kind == FAILED:
                self.finished = True
                message = body.decode("utf-8", "replace")
                if self.handed_out:  # refused after items went out (nesting too deep): they are kept
                    raise ParseFailed(message, self.handed_out, self.waited)
                raise FeedError(message)
            else:
                logger.error("parse process error: %s", printable(body[:2000].decode("utf-8", "replace"), 2000))
                raise ParseFailed("parser failed (internal error, see the worker log)", self.handed_out, self.waited)


class LanedParse:
    """One feed parsed by several processes at once, each normalising its lane's items (``models.feedstream.in_lane``).

    Iterates like a :class:`ParseJob`: rows come in item order (``LaneMerge``), reading next from the
    lane that is behind (a lane ahead blocks on its pipe meanwhile, so memory stays a few chunks).
    A failure of any lane fails the parse, with ``handed_out`` the items every lane got past.
    """

    def __init__(self, jobs: list[ParseJob]) -> None:
        self.jobs = jobs
        self.merge = LaneMerge(len(jobs))
        self.summary: FeedSummary | None = None

    @property
    def handed_out(self) -> int:
        return self.merge.frontier

    @property
    def waited(self) -> float:
        return sum(job.waited for job in self.jobs)

    def __aiter__(self) -> AsyncIterator[list[Row]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[list[Row]]:
        lanes = [aiter(job) for job in self.jobs]
        running = set(range(len(lanes)))
        while running:
            lane = self.merge.behind(running)
            job = self.jobs[lane]
            try:
                rows = await anext(lanes[lane])
            except StopAsyncIteration:
                running.discard(lane)
                assert job.summary is not None  # noqa: S101 - a lane's iteration ends with its summary
                self.summary = job.summary
                rows = self.merge.end(lane, job.summary.items)
            except ParseFailed as exc:
                raise ParseFailed(str(exc), self.handed_out, self.waited) from exc
            else:
                rows = self.merge.add(lane, job.handed_out, rows)
            if rows:
                yield rows


class ParserPool:
    """At most ``processes`` parse processes, each parsing one feed at a time under a deadline."""

    def __init__(
        self, *, processes: int, timeout_seconds: float, max_items: int, max_posting_bytes: int | None = None, partitions: int = 1,
        max_memory_mb: int | None = None, on_peak_rss: Callable[[int], None] | None = None,
    ) -> None:
        self.processes = processes
        self.timeout_seconds = timeout_seconds
        self.max_items = max_items
        self.max_posting_bytes = max_posting_bytes  # larger postings become failed items (see parse_in_chunks)
        self.partitions = partitions  # jobs.parsed partitions: each posting row carries its key's partition
        self.max_memory_mb = max_memory_mb  # each child's address-space limit (None: no limit)
        self.on_peak_rss = on_peak_rss  # told ``peak_rss`` whenever a job ends (for a gauge)
        self.peak_rss = 0  # the largest peak RSS of any child so far, in bytes
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside the running loop
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: the worker is stopping."""
        return self._closed

    def pids(self) -> list[int]:
        """Process ids of the live parse processes (for tests and diagnostics)."""
        return sorted(child.process.pid for child in self._children if child.alive)

    async def _spawn(self) -> _Child:
        # A session of its own: a stop signal sent to the worker's process group (``make stop``, Ctrl-C)
        # is the worker's to act on. In the group, the child died first (even while it was still starting),
        # and the run in flight ended "failed: parser process died (exit code -15)". The worker kills its
        # children when it closes the pool, and the kernel when the worker dies (PR_SET_PDEATHSIG).
        limit = () if self.max_memory_mb is None else (str(self.max_memory_mb),)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agents.parse_child", str(os.getpid()), *limit,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=READ_LIMIT, start_new_session=True,
        )
        child = _Child(process)
        self._children.add(child)
        logger.info("parse process started pid=%d", process.pid)
        return child

    @contextlib.asynccontextmanager
    async def parse(
        self, payload: bytes | bytearray, source_url: str, source_name: str, only: Collection[int] | None = None,
        *, feed_format: str = "auto", mapping: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ParseJob | LanedParse]:
        """A parse of one feed in a child process (a feed of ``SPLIT_BYTES`` or more in two, when a second is
        free right now); a child is killed if its job does not end well. ``feed_format`` and ``mapping`` are
        the feed's (SPEC §3a): every format takes this same guarded path."""
        if self._closed:
            raise PoolClosed("parser pool is closed (worker stopping)")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.processes)
        slots = self._slots
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(slots)
            lanes = 1
            # A second process only if one is free now: waiting for it could deadlock two big feeds.
            while only is None and len(payload) >= SPLIT_BYTES and lanes < MAX_LANES and not slots.locked():
                await held.enter_async_context(slots)
                lanes += 1
            if self._closed:  # closed while this job waited for a free process
                raise PoolClosed("parser pool is closed (worker stopping)")
            jobs: list[ParseJob] = []
            try:
                for lane in range(lanes):
                    job = ParseJob(await self._child(), self.timeout_seconds, self.max_memory_mb)
                    jobs.append(job)
                    body = marshal.dumps((source_url, source_name,
                                          (self.max_items, self.max_posting_bytes, self.partitions, lane, lanes),
                                          frozenset(only) if only is not None else None,
                                          (feed_format, dict(mapping) if mapping is not None else None)))
                    await job.send(body, payload)
                if lanes > 1:
                    logger.info("parsing in %d processes url=%s bytes=%d", lanes, source_url, len(payload))
                try:
                    yield jobs[0] if lanes == 1 else LanedParse(jobs)
                except (ParseFailed, FeedError) as exc:
                    if self._closed:  # its process was killed by close(): the worker is stopping
                        raise PoolClosed(f"parse abandoned: the worker is stopping ({exc})") from exc
                    raise
            finally:
                for job in jobs:
                    await self._release(job, source_url)

    async def _child(self) -> _Child:
        """An idle live child, else a new one."""
        while self._idle:
            candidate = self._idle.pop()
            if candidate.alive:
                return candidate
        return await self._spawn()

    async def _release(self, job: ParseJob, source_url: str) -> None:
        """Back to the idle list if its job ended well, else killed; its peak RSS is noted either way."""
        child = job.child
        peak = peak_rss_bytes(child.process.pid) if child.alive else None  # read while /proc still has it
        if job.finished and child.alive and not self._closed:
            self._idle.append(child)
        else:
            died = not child.alive
            if not died:
                logger.warning("parse process killed pid=%d url=%s", child.process.pid, source_url)
            await child.kill()
            self._children.discard(child)
            if died:  # reaped by now: the kernel's figure for reaped children covers it (the largest of them)
                peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if peak is not None:
            self._note_peak_rss(peak, child.process.pid, source_url)

    def _note_peak_rss(self, peak: int, pid: int, source_url: str) -> None:
        """Log a child's peak RSS (its high-water mark so far) and keep the largest."""
        self.peak_rss = max(self.peak_rss, peak)
        logger.info("parse process peak_rss_mb=%.1f limit_mb=%s pid=%d url=%s", peak / 2**20,
                    self.max_memory_mb if self.max_memory_mb is not None else "none", pid, source_url)
        if self.on_peak_rss is not None:
            self.on_peak_rss(self.peak_rss)

    async def close(self) -> None:
        """Kill every parse process and wait for each (the worker is stopping)."""
        self._closed = True
        children = list(self._children)
        self._idle.clear()
        self._children.clear()
        for child in children:
            child.stdin.close()
        await asyncio.gather(*(child.kill() for child in children), return_exceptions=True)
        if children:
            logger.info("parse processes stopped count=%d", len(children))
