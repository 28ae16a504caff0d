"""The parse process: ``python -m agents.parse_child PARENT_PID``, started by ``agents/parsing.py``.

Reads jobs from stdin, runs :func:`models.feedstream.parse_in_chunks` and writes frames to
stdout (the protocol is in ``agents/parsing.py``), one job after another until stdin closes.
Imports only the parsing code (not faust): it starts in a fraction of a second. It runs at the
worker's CPU priority: a big feed's run waits for its parse, and at nice 10 the parse got a tenth of
a busy core, so the worker waited for it most of the run (measured on a 300,000-posting re-import,
two rounds: nice 0 was 16% and 13% faster). It dies with its parent (``PR_SET_PDEATHSIG`` on
Linux), so a worker killed with SIGKILL leaves no parser running a hostile feed behind.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import signal
import sys
import time
from typing import BinaryIO

from agents.parsing import CHUNK, END, ERROR, FAILED, JOB, PAYLOAD, read_frame, write_frame
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


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Run jobs until stdin ends; a bug in one job is reported as an ERROR frame and ends the process."""

    def send(kind: bytes, body: bytes) -> None:
        write_frame(stdout, kind, body)
        stdout.flush()

    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        kind, body = frame
        if kind != JOB:
            send(ERROR, f"unexpected frame {kind!r}".encode())
            return
        source_url, source_name, limits, only = marshal.loads(body)  # noqa: S302 - from the worker
        data = read_frame(stdin)
        if data is None or data[0] != PAYLOAD:
            send(ERROR, b"a job without its payload")
            return
        payload = data[1]
        max_items, max_posting_bytes, partitions, lane, lanes = limits
        try:
            summary = parse_in_chunks(
                payload, source_url, source_name, max_items=max_items, max_posting_bytes=max_posting_bytes,
                partitions=partitions, only=only, lane=(lane, lanes),
                emit=lambda chunk: send(CHUNK, chunk), clock=time.monotonic,
            )
        except FeedError as exc:
            send(FAILED, str(exc).encode("utf-8", "replace"))
        except Exception as exc:  # noqa: BLE001 - reported to the worker, which replaces this process
            send(ERROR, f"{type(exc).__name__}: {exc}"[:2000].encode("utf-8", "replace"))
            return
        else:
            send(END, encode_summary(summary))


def main() -> None:
    die_with_parent(int(sys.argv[1]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not corrupt the protocol
    try:
        serve(stdin, stdout)
    except BrokenPipeError:  # the worker went away
        os._exit(0)


if __name__ == "__main__":
    main()
