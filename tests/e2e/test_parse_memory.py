"""Issue 22's done-when for memory: hostile feeds fail cleanly under PARSE_MAX_MEMORY_MB beside exact normal feeds.

One batch of runs against a real worker: normal feeds of the chaos corpus (RSS, Atom, RDF; one with broken
items, one with duplicates; ground truth from ``deploy/chaos_corpus.py``, not from the pipeline's code)
and feeds built to cost the parse memory: one item of millions of small elements (same and distinct
names, and with an attribute each), an item of many attributes, an item of 30 million characters of text, and one start tag of
3,000,000 attributes that only the memory limit can stop. The first four fail their hostile item alone
(the items around it are imported), the last fails its run naming the limit; every normal run is exact,
``jobs`` holds exactly the expected documents, the worker is the same process throughout, and the peak
RSS of every parse process (read by the worker from ``VmHWM`` and logged) stays within the limit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy import chaos_corpus
from deploy.chaos_corpus import COUNTS, Corpus, MemoryCase, Truth, render
from models.registry import FeedEntry
from models.runs import FINISHED
from streams.cli import import_feeds
from tests.support import FeedServer, Process, mongo_db, parse_peaks, settings_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LIMIT_MB = 256


def memory_cases() -> list[MemoryCase]:
    return [
        chaos_corpus.wide_item("wide-item", 3_000_000),
        chaos_corpus.wide_item("wide-item-distinct-names", 1_000_000, distinct_names=True),
        chaos_corpus.many_attributes("many-attributes", 300_000, elements=100),
        # The shape that amplified most (a dict per element): 420 MiB for this 14 MiB feed before the bound.
        chaos_corpus.many_attributes("wide-item-of-attributed-elements", 1_500_000, elements=1_500_000),
        chaos_corpus.long_text("long-text", 30_000_000),
        chaos_corpus.past_memory_limit("past-the-memory-limit", 3_000_000, LIMIT_MB),
    ]


def peaks_by_url(log: Path) -> dict[str, float]:
    """The largest peak RSS (MiB) the worker logged for the parse processes of each feed URL, each under our limit."""
    peaks = parse_peaks(log)
    assert all(limit == str(LIMIT_MB) for _, limit in peaks.values()), peaks
    return {url: peak for url, (peak, _) in peaks.items()}


async def test_memory_hostile_feeds_fail_cleanly_within_the_limit_and_every_other_run_is_exact(
    start_worker: Callable[..., Process], pipeline_env: dict[str, str], feed_server: FeedServer, unique: str,
) -> None:
    names = Corpus.names(3)
    corpus = Corpus([300, 200, 100], {name: feed_server.url(f"{unique}-{name}") for name in names})
    for feed in corpus.feeds:
        feed_server.put(f"{unique}-{feed.name}", render(feed), conditional=False)
    cases = {feed_server.put(f"{unique}-{case.name}", case.body, conditional=False): case for case in memory_cases()}

    env = {"PARSE_MAX_MEMORY_MB": str(LIMIT_MB), "PARSE_TIMEOUT_SECONDS": "300", "RUN_TIMEOUT_SECONDS": "900"}
    worker = start_worker(**env)
    assert worker.proc is not None
    worker_pid = worker.proc.pid
    entries = [FeedEntry(feed.url, feed.name) for feed in corpus.feeds]
    entries[1:1] = [FeedEntry(url, case.name) for url, case in cases.items()]  # in the middle of the batch, all at once
    runs = await import_feeds(settings_of({**pipeline_env, **env}), entries, 600.0, io.StringIO())
    assert all(run["status"] in FINISHED for run in runs.values()), [r for r in runs.values() if r["status"] not in FINISHED]

    db = mongo_db(pipeline_env)
    docs = {doc["sourceUrl"]: doc for doc in db.import_logs.find({"runId": {"$in": list(runs)}}, {"_id": 0})}
    peaks = peaks_by_url(worker.log_path)
    print(f"\n{'feed':33} {'MiB':>5} {'status':8} {'peak RSS MiB':>12}  reason")
    for url, case in cases.items():
        doc = docs[url]
        reason = doc.get("error") or "; ".join(sorted({f["reason"] for f in doc["failures"]})) or "-"
        print(f"{case.name:33} {len(case.body) / 2**20:5.1f} {doc['status']:8} {peaks.get(url, float('nan')):12.1f}  {reason[:100]}")
    print(f"largest peak RSS of a parse process: {max(peaks.values()):.1f} MiB (PARSE_MAX_MEMORY_MB={LIMIT_MB})")

    problems: list[str] = []
    truth = Truth()
    for feed in corpus.feeds:
        doc = docs[feed.url]
        expected = truth.run(feed, doc["runId"])
        got = {name: doc[name] for name in COUNTS}
        if (doc["status"], got) != (expected.status, expected.counts):
            problems.append(f"{feed.name}: {doc['status']} {got}, expected {expected.status} {expected.counts}")
    for url, case in cases.items():
        doc = docs[url]
        reasons = [doc.get("error") or "", *(failure["reason"] for failure in doc["failures"])]
        if doc["status"] != case.status or not any(case.reason in reason for reason in reasons):
            problems.append(f"{case.name}: {doc['status']} {reasons[:3]!r}, expected {case.status} with {case.reason!r}")
        if case.counts is not None and {name: doc[name] for name in COUNTS} != case.counts:
            problems.append(f"{case.name}: counts {[doc[name] for name in COUNTS]}, expected {case.counts}")
        if case.counts is not None and doc["failures"][0]["key"] != f"{case.name}-hostile":
            problems.append(f"{case.name}: the failed item is {doc['failures'][0]}")
    assert not problems, "\n".join(problems)

    stored = {job["_id"]: job for job in db.jobs.find({}, {"_id": 1, "sourceUrl": 1, "externalId": 1, "title": 1,
                                                          "description": 1, "version": 1})}
    expected_jobs = {key: (job.external_id, job.title, job.description, job.version) for key, job in truth.jobs.items()}
    got_jobs = {key: (job["externalId"], job["title"], job["description"], job["version"])
                for key, job in stored.items() if job["sourceUrl"] not in cases}
    assert got_jobs == expected_jobs
    hostile_jobs = sorted(job["externalId"] for job in stored.values() if job["sourceUrl"] in cases)
    assert hostile_jobs == sorted(f"{case.name}-good-{n}" for case in cases.values() if case.counts for n in (1, 2))

    assert worker.proc.poll() is None and worker.proc.pid == worker_pid, "the worker itself stayed up"
    assert set(cases) <= set(peaks), "every hostile feed's parse process reported its peak RSS"
    assert max(peaks.values()) <= LIMIT_MB
