"""Prometheus metrics of the API process, in a registry per app so that tests can build many apps."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.aiohttp import make_aiohttp_handler


class ApiMetrics:
    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self.requests = Counter("jobstream_api_requests_total", "HTTP requests by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("jobstream_api_request_duration_seconds", "HTTP request duration (SSE streams excluded)",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.sse_clients = Gauge("jobstream_api_sse_clients", "Open SSE streams", registry=self.registry)
        self.sse_events = Counter("jobstream_api_sse_events_total", "Snapshots received from import.logs",
                                  registry=self.registry)
        self.sse_dropped = Counter("jobstream_api_sse_dropped_clients_total", "SSE clients dropped for falling behind",
                                   registry=self.registry)
        self.runs_requested = Counter("jobstream_api_runs_requested_total", "Import runs requested over the API",
                                      registry=self.registry)
        self.topics_under_replicated = Gauge(
            "jobstream_kafka_topics_under_replicated",
            "Pipeline topics with fewer replicas or a lower min.insync.replicas than KAFKA_REPLICATION_FACTOR / "
            "KAFKA_MIN_INSYNC_REPLICAS (checked at start and by /health, at most once a minute)", registry=self.registry)
        self.topic_under_replicated = Gauge(
            "jobstream_kafka_topic_under_replicated", "1 for a pipeline topic below the replication settings, 0 for one "
            "that meets them", ["topic"], registry=self.registry)
        # content negotiation (Prometheus text or OpenMetrics) and gzip, as prometheus-client implements them
        self.handler = make_aiohttp_handler(self.registry)
