"""Prometheus metrics of the worker (exposed on WORKER_METRICS_PORT by ``jobstream worker``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ITEMS = Counter("jobstream_items_total", "Postings by feed and final outcome", ["feed", "outcome"])
ITEMS_PARSED = Counter("jobstream_items_parsed_total", "Postings published to jobs.parsed", ["feed"])
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
REPAIRS = Counter("jobstream_run_repairs_total", "Runs whose unaccounted items were republished after a silence")
