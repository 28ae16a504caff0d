"""Prometheus metrics of the worker (exposed on WORKER_METRICS_PORT by ``jobstream worker``)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

# Series per feed label at most: past it, feeds share the label "other" (the API accepts any URL).
MAX_FEED_LABELS = 500
_feed_labels: set[str] = set()


def feed_label(url: str) -> str:
    """The ``feed`` label of a feed URL: a short stable id (first 12 hex of its sha1), never the URL itself.

    A URL can be long and comes from API requests, so the raw URL made unbounded series; the id is
    12 characters, and at most ``MAX_FEED_LABELS`` distinct ids are used per process.
    """
    label = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:12]
    if label not in _feed_labels:
        if len(_feed_labels) >= MAX_FEED_LABELS:
            return "other"
        _feed_labels.add(label)
    return label


logger = logging.getLogger(__name__)

ITEMS = Counter("jobstream_items_total", "Postings by feed (feed_label) and final outcome", ["feed", "outcome"])
ITEMS_PARSED = Counter("jobstream_items_parsed_total", "Postings published to jobs.parsed by feed (feed_label)", ["feed"])
def count_items(counts: Mapping[tuple[str, str], int]) -> None:
    """Add a batch's ``{(feed URL, outcome): postings}`` to ``ITEMS``: one call per series, not per posting."""
    for (url, outcome), count in counts.items():
        ITEMS.labels(feed=feed_label(url), outcome=outcome).inc(count)


RUNS_FINISHED = Counter("jobstream_runs_finished_total", "Finished import runs by status", ["status"])
RUNS_IN_PROGRESS = Gauge("jobstream_runs_in_progress", "Import runs pending or running (from import_logs)")
FETCH_SECONDS = Histogram("jobstream_fetch_duration_seconds", "Feed HTTP fetch duration",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
PARSE_SECONDS = Histogram("jobstream_parse_duration_seconds", "Feed parse duration",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BULK_WRITE_SECONDS = Histogram("jobstream_bulk_write_duration_seconds", "MongoDB bulk_write duration per batch",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_SIZE = Histogram("jobstream_sink_batch_size", "Postings per sink batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000))
LATENCY_SECONDS = Histogram("jobstream_posting_latency_seconds", "Time from fetch to MongoDB write of a posting",
                            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
SEARCH_WRITE_FAILURES = Counter("jobstream_search_write_failures_total",
                                "job_search documents not written (the posting itself was stored)")
WRITE_RETRIES = Counter("jobstream_sink_write_retries_total", "Sink batches retried because MongoDB was unreachable")
CONSUMER_LAG = Gauge("jobstream_consumer_lag", "Messages behind the end of the partition", ["topic", "partition"])
MESSAGES_REFUSED = Counter("jobstream_messages_refused_total", "Messages an agent could not decode, sent to jobs.dlq (agents/inbox.py)",
                           ["topic"])
REPAIRS = Counter("jobstream_run_repairs_total", "Runs whose unaccounted items were republished after a silence")
LOOP_LAG_SECONDS = Histogram("jobstream_event_loop_lag_seconds", "How late the worker's event loop woke a 100 ms timer",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LOOP_LAG_MAX_SECONDS = Gauge("jobstream_event_loop_lag_max_seconds",
                             "Largest event-loop lag of the last LOOP_LAG_REPORT_SECONDS window")
PARSE_PEAK_RSS_BYTES = Gauge("jobstream_parse_peak_rss_bytes",
                             "Largest peak RSS of this worker's parse processes so far (each is limited to PARSE_MAX_MEMORY_MB)")
TOPICS_UNDER_REPLICATED = Gauge("jobstream_kafka_topics_under_replicated",
                                "Pipeline topics with fewer replicas or a lower min.insync.replicas than "
                                "KAFKA_REPLICATION_FACTOR / KAFKA_MIN_INSYNC_REPLICAS (checked at start)")
TOPIC_UNDER_REPLICATED = Gauge("jobstream_kafka_topic_under_replicated",
                               "1 for a pipeline topic below the replication settings, 0 for one that meets them", ["topic"])
REPLICATION_FACTOR = Gauge("jobstream_kafka_replication_factor", "The replication factor new topics get (resolved at start)")
MIN_INSYNC_REPLICAS = Gauge("jobstream_kafka_min_insync_replicas", "The min.insync.replicas new topics get (resolved at start)")
LOOP_LAG_TICK_SECONDS = 0.1


async def watch_event_loop_lag(report_seconds: float) -> None:
    """Measure how late a 100 ms timer fires, forever; log the window's worst every ``report_seconds``.

    A lag means something held the event loop (or the GIL): every agent, heartbeat and timer of
    the worker waited that long. The log line (``event loop lag max_ms=...``) is also what the
    hostile-feed test reads; over a second it is a warning.
    """
    loop = asyncio.get_running_loop()
    worst, samples, window_start = 0.0, 0, loop.time()
    while True:
        due = loop.time() + LOOP_LAG_TICK_SECONDS
        await asyncio.sleep(LOOP_LAG_TICK_SECONDS)
        now = loop.time()
        lag = max(0.0, now - due)
        LOOP_LAG_SECONDS.observe(lag)
        worst, samples = max(worst, lag), samples + 1
        if now - window_start >= report_seconds:
            LOOP_LAG_MAX_SECONDS.set(worst)
            logger.log(logging.WARNING if worst >= 1.0 else logging.INFO,
                       "event loop lag max_ms=%.1f samples=%d window_s=%.1f", worst * 1000, samples, now - window_start)
            worst, samples, window_start = 0.0, 0, now
