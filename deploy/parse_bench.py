"""Micro-benchmark of the parse alone: items per second of a big generated RSS feed through ``parse_in_chunks``.

No stack, no worker: the feed is generated in memory (the shape of ``deploy/bench.py``'s postings) and
parsed ``--rounds`` times in this process, as a parse process would (chunks encoded, then dropped).
Rates are per CPU second (the machine may be shared). Prints each round and the best, so a change to
the item reader can be compared before and after (``--root`` parses with another checkout's
``models/``: ``git archive HEAD models | tar -x -C DIR``).
Prints figures; asserts nothing about speed.

Usage: .venv/bin/python deploy/parse_bench.py [--items 200000] [--rounds 5] [--root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose models/ is parsed with")
    args = parser.parse_args()
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
