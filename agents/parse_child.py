"""The parse process: ``python -m agents.parse_child PARENT_PID [MAX_MEMORY_MB]``, started by ``agents/parsing.py``.

Reads jobs from stdin, runs :func:`models.feedstream.parse_in_chunks` and writes frames to
stdout (the protocol is in ``agents/parsing.py``), one job after another until stdin closes.
Imports only the parsing code (not faust): it starts in a fraction of a second. It runs at the
worker's CPU priority: a big feed's run waits for its parse, and at nice 10 the parse got a tenth of
a busy core, so the worker waited for it most of the run (measured on a 300,000-posting re-import,
two rounds: nice 0 was 16% and 13% faster). It dies with its parent (``PR_SET_PDEATHSIG`` on
Linux), so a worker killed with SIGKILL leaves no parser running a hostile feed behind.

With ``MAX_MEMORY_MB`` (``PARSE_MAX_MEMORY_MB``) the kernel refuses it more address space than that
(``RLIMIT_AS``, set before the first job): a feed that needs more ends in a MemoryError here, reported
to the worker as an ``M`` frame, instead of the machine's OOM killer choosing a victim (the broker, the
store). Address space bounds the resident set from above, so the process's peak RSS stays below it too.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import sys
import time
from typing import BinaryIO

from agents.parsing import CHUNK, END, ERROR, EXIT_OUT_OF_MEMORY, FAILED, JOB, OUT_OF_MEMORY, PAYLOAD, read_frame, write_frame
from models.feed import FeedError
from models.feedstream import encode_summary, parse_in_chunks

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent goes; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the parent's kill still applies
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def limit_memory(max_memory_mb: int) -> None:
    """Cap this process's address space (never raising a lower limit it was started with)."""
    limit = max_memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Run jobs until stdin ends; a bug in one job is reported as an ERROR frame and ends the process.

    Out of memory while parsing: what the parse held is freed as its frames unwind, the ``M`` frame
    goes out, and the process waits to be killed and replaced (the worker reads its peak RSS first).
    Out of memory while reading a job, the stream is out of step: the process exits with
    ``EXIT_OUT_OF_MEMORY``, which the worker reports the same way.
    """

    def send(kind: bytes, body: bytes) -> None:
        write_frame(stdout, kind, body)
        stdout.flush()

    while True:
        try:
            frame = read_frame(stdin)
        except MemoryError:
            os._exit(EXIT_OUT_OF_MEMORY)
        if frame is None:
            return
        kind, body = frame
        if kind != JOB:
            send(ERROR, f"unexpected frame {kind!r}".encode())
            return
        source_url, source_name, limits, only, (feed_format, mapping) = marshal.loads(body)  # noqa: S302 - from the worker
        try:
            data = read_frame(stdin)
        except MemoryError:
            os._exit(EXIT_OUT_OF_MEMORY)
        if data is None or data[0] != PAYLOAD:
            send(ERROR, b"a job without its payload")
            return
        payload = data[1]
        del data
        max_items, max_posting_bytes, partitions, lane, lanes = limits
        out_of_memory = False
        try:
            summary = parse_in_chunks(
                payload, source_url, source_name, max_items=max_items, max_posting_bytes=max_posting_bytes,
                partitions=partitions, only=only, lane=(lane, lanes), feed_format=feed_format, mapping=mapping,
                emit=lambda chunk: send(CHUNK, chunk), clock=time.monotonic,
            )
        except MemoryError:
            out_of_memory = True  # reported below: out of this block the exception and the parse's frames are freed
        except FeedError as exc:
            send(FAILED, str(exc).encode("utf-8", "replace"))
        except Exception as exc:  # noqa: BLE001 - reported to the worker, which replaces this process
            send(ERROR, f"{type(exc).__name__}: {exc}"[:2000].encode("utf-8", "replace"))
            return
        else:
            send(END, encode_summary(summary))
        if out_of_memory:
            del payload
            send(OUT_OF_MEMORY, b"")


def main() -> None:
    die_with_parent(int(sys.argv[1]))
    if len(sys.argv) > 2:
        limit_memory(int(sys.argv[2]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not corrupt the protocol
    try:
        serve(stdin, stdout)
    except BrokenPipeError:  # the worker went away
        os._exit(0)


if __name__ == "__main__":
    main()
