"""Micro-benchmark of the parse alone: items per second of a big generated RSS feed through ``parse_in_chunks``.

No stack, no worker: the feed is generated in memory (the shape of ``deploy/bench.py``'s postings) and
parsed ``--rounds`` times in this process, as a parse process would (chunks encoded, then dropped).
Rates are per CPU second (the machine may be shared). Prints each round and the best, so a change to
the item reader can be compared before and after (``--root`` parses with another checkout's
``models/``: ``git archive HEAD models | tar -x -C DIR``).
``--hostile`` instead parses each memory-hostile feed of ``deploy/chaos_corpus.py`` in a process of its
own (under ``--limit-mb`` of address space, as a parse process runs; 0 for none) and prints how it
ended and the process's peak RSS (``VmHWM``, read by the process itself), the same with ``--root`` at an older
checkout. Prints figures; asserts nothing about speed.

Usage: .venv/bin/python deploy/parse_bench.py [--items 200000] [--rounds 5] [--root DIR] [--hostile [--limit-mb 512]]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess  # noqa: S404 - each hostile feed is parsed in a process of its own
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy"))

from chaos_corpus import long_text, many_attributes, past_memory_limit, wide_item  # noqa: E402

# What one parse process runs: read the feed, cap the address space, parse it all (the items are few).
CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[1])
payload = open(sys.argv[2], "rb").read()
if int(sys.argv[3]):
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]) << 20, int(sys.argv[3]) << 20))
from models.feed import FeedError, ItemFailure, parse_feed
try:
    items = parse_feed(payload, "https://bench.example/hostile.xml").items
except MemoryError:
    outcome = "MemoryError"
except FeedError as exc:
    outcome = f"feed error: {exc}"
else:
    outcome = f"{len(items)} items; " + ("; ".join(sorted({i.reason for i in items if isinstance(i, ItemFailure)})) or "-")
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(hwm[0], outcome)
"""


def generated_feed(items: int) -> bytes:
    """An RSS 2.0 feed of ``items`` postings shaped like a WP Job Manager feed's (about 600 bytes each)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
             'xmlns:job_listing="https://wpjobmanager.com/job-listing"><channel><title>Bench</title>']
    body = "&lt;p&gt;Build things. " + "Lorem ipsum dolor sit amet. " * 8 + "&lt;/p&gt;"
    for i in range(items):
        parts.append(
            f"<item><title>Engineer {i}</title><link>https://example.com/jobs/job-{i}</link>"
            f'<guid isPermaLink="false">job-{i}</guid><job_listing:company>Company {i % 997}</job_listing:company>'
            f"<job_listing:location>Remote</job_listing:location><category>Engineering</category>"
            f"<description>{body}</description><pubDate>Mon, 06 Jan 2025 10:00:00 +0000</pubDate></item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def hostile(root: Path, limit_mb: int) -> None:
    """Each memory-hostile feed in a process of its own: how it ends, and the process's peak RSS."""
    cases = [lambda: wide_item("wide-item", 3_000_000),
             lambda: wide_item("wide-item-distinct-names", 1_000_000, distinct_names=True),
             lambda: many_attributes("many-attributes", 300_000, elements=100),
             lambda: many_attributes("wide-item-of-attributed-elements", 1_500_000, elements=1_500_000),
             lambda: long_text("long-text", 30_000_000),
             lambda: past_memory_limit("one-tag-of-3M-attributes", 3_000_000, limit_mb)]
    print(f"root={root} limit={limit_mb or 'none'} MiB")
    for make in cases:  # one at a time: this process stays small, and VmHWM is the parse's own (read in the child)
        case = make()
        with tempfile.NamedTemporaryFile(suffix=".xml") as body:
            body.write(case.body)
            body.flush()
            started = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), body.name, str(limit_mb)],  # noqa: S603
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None  # noqa: S101 - created with PIPE
            hwm_kib, _, outcome = child.stdout.read().strip().partition(" ")
            status = child.wait()
            seconds = time.perf_counter() - started
        peak = f"{int(hwm_kib) / 1024:6.1f} MiB" if hwm_kib.isdigit() else "     ?    "
        print(f"{case.name:33} {len(case.body) / 2**20:5.1f} MiB  peak RSS {peak}  {seconds:5.1f} s  "
              f"{outcome[:90] or f'exit status {status}'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose models/ is parsed with")
    parser.add_argument("--hostile", action="store_true", help="peak RSS of the memory-hostile feeds instead")
    parser.add_argument("--limit-mb", type=int, default=512, help="--hostile: address-space limit of each process (0: none)")
    args = parser.parse_args()
    if args.hostile:
        hostile(args.root.resolve(), args.limit_mb)
        return
    sys.path.insert(0, str(args.root.resolve()))
    from models.feedstream import parse_in_chunks  # noqa: PLC0415 - from --root

    payload = generated_feed(args.items)
    rates: list[float] = []
    for round_ in range(args.rounds):
        emitted = [0]

        def emit(chunk: bytes, emitted: list[int] = emitted) -> None:
            emitted[0] += len(chunk)

        started, cpu_started = time.perf_counter(), time.process_time()
        summary = parse_in_chunks(payload, "https://bench.example/feed.xml", "bench", max_items=10**7,
                                  emit=emit, clock=time.monotonic, partitions=8, max_posting_bytes=1_048_576 - 16_384)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert summary.items == args.items, summary  # noqa: S101 - a benchmark of a wrong parse is worthless
        rates.append(args.items / cpu)
        print(f"round {round_ + 1}: {seconds:.2f} s wall, {cpu:.2f} s CPU, {args.items / cpu:,.0f} items per CPU second, "
              f"{emitted[0] / 1e6:.0f} MB of chunks")
    print(f"root={args.root} feed={len(payload) / 1e6:.0f} MB items={args.items:,} "
          f"best={max(rates):,.0f} median={statistics.median(rates):,.0f} items per CPU second")


if __name__ == "__main__":
    main()
