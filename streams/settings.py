"""The one settings object, built from the environment at start-up and validated with clear messages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from models.egress import parse_networks, parse_ports

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_MONGO = "mongodb://127.0.0.1:27017"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MESSAGE_HEADROOM = 16 * 1024  # what wraps a posting in its largest message (change event, DLQ reason)
MIN_MESSAGE_BYTES = 64 * 1024
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
MIB = 1024 * 1024
AT_LEAST_ONE = ("kafka_replication_factor", "kafka_min_insync_replicas")  # 0 in the dataclass means "resolve at start"
MAX_BROKERS = 9
PARSE_MEMORY_HEADROOM_MB = 128
"""What a parse process needs beside its feed (it holds the payload once): measured, 32 MiB before the
first feed and about 35 MiB over the payload for a 144 MiB feed of ordinary postings; an item at the
item reader's bounds (``models.feed.MAX_ITEM_NODES``, ``MAX_ITEM_TEXT_CHARS``) adds up to about 40 MB.
PARSE_MAX_MEMORY_MB below MAX_FEED_BYTES plus this would fail feeds the fetch accepted."""


def parse_memory_needed_mb(max_feed_bytes: int) -> int:
    """The least PARSE_MAX_MEMORY_MB that ``max_feed_bytes`` allows: the feed in whole MiB, rounded up, plus the headroom."""
    return -(-max_feed_bytes // MIB) + PARSE_MEMORY_HEADROOM_MB



class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists each problem."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker, the API and the CLI need to know about their surroundings."""

    kafka_bootstrap_servers: str = LOCAL_KAFKA
    mongo_url: str = field(default=LOCAL_MONGO, repr=False)
    mongo_db: str = "jobstream"
    feeds_file: Path = Path("feeds.yaml")
    import_interval_minutes: float = 60.0
    batch_size: int = 500
    batch_window_seconds: float = 1.0
    topic_prefix: str = "jobstream."
    topic_partitions: int = 8
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token: str = field(default="", repr=False)
    # The request guards (api/guards.py): reads behind the token too, the Host names an API beyond
    # loopback answers (comma-separated; ``*.example.com`` for subdomains; ``*`` for any), the most
    # open SSE streams, and the most feeds the registry holds.
    api_reads_require_token: bool = False
    api_allowed_hosts: str = ""
    max_sse_clients: int = 100
    max_feeds: int = 10_000
    fetch_timeout_seconds: float = 30.0
    max_feed_bytes: int = 50 * 1024 * 1024
    max_failures_kept: int = 100
    raw_feed_retention_days: float = 7.0
    log_level: str = "INFO"
    # Not in the SPEC's list, but needed to run several workers or isolated tests side by side.
    app_id: str = "jobstream"
    table_store: str = "rocksdb://"  # on disk: a restart does not replay the whole changelog
    data_dir: Path = Path(".state/worker")
    worker_metrics_port: int = 9464
    run_timeout_seconds: float = 900.0
    repair_after_seconds: float = 60.0
    runs_retention_hours: float = 48.0  # finished runs leave the stats table after this (import_logs keeps them)
    import_on_start: bool = True
    # The store: the most statements one write command carries (FerretDB 1.24 as shipped wedges at
    # 100), how many write commands one process has in flight, and deadlines of one store call.
    mongo_write_batch: int = 50
    # Inserts never wedged it (FerretDB as shipped takes insert_many of 500), and a command's fixed
    # cost is most of an insert's: larger commands for them.
    mongo_insert_batch: int = 500
    mongo_max_inflight_writes: int = 2
    mongo_timeout_seconds: float = 60.0
    api_store_timeout_seconds: float = 5.0
    # Hostile feeds and URLs (SPEC §6): egress exemptions, and bounds on parsing one feed.
    fetch_allow_networks: str = ""  # comma-separated CIDRs exempt from the egress policy
    fetch_allow_ports: str = "80,443"
    parse_timeout_seconds: float = 120.0
    # Each parse process's address-space limit (RLIMIT_AS): up to 4 of them per worker, so a hostile feed
    # costs the machine at most that, and the OOM killer never has to choose the broker or the store.
    parse_max_memory_mb: int = 512
    max_items_per_feed: int = 1_000_000
    # The largest Kafka message the pipeline sends: topics are created with it (max.message.bytes),
    # producers are capped by it, and a posting too large for it is one failed item. The default is
    # Kafka's own broker default, so a user's broker needs no change.
    kafka_max_message_bytes: int = 1_048_576
    # How often the worker logs the largest event-loop lag it measured (and sets its gauge).
    loop_lag_report_seconds: float = 30.0
    # Replication (SPEC §4, §6). 0 = not set: resolved against the cluster at start (streams/replication.py):
    # RF 3 on a cluster of 3 or more brokers, else the broker count; min ISR RF - 1, at least 1.
    kafka_replication_factor: int = 0
    kafka_min_insync_replicas: int = 0
    # The write concern of every MongoDB write: ``majority`` or a number of members >= 1.
    mongo_write_concern: str = "majority"
    # Kafka nodes the local stack (deploy/stack.py) starts: 1, or 3 for a KRaft cluster on loopback.
    brokers: int = 1

    @property
    def write_concern(self) -> str | int:
        """MONGO_WRITE_CONCERN as pymongo's ``w``: ``majority`` or a number."""
        value = self.mongo_write_concern.strip()
        return int(value) if value.isdigit() else value

    @property
    def max_posting_bytes(self) -> int:
        """The largest posting (as JSON) that fits every message carrying it, wrappers included
        (``jobs.upserts`` change event, ``jobs.dlq`` entry with its reason)."""
        return self.kafka_max_message_bytes - MESSAGE_HEADROOM

    def topic(self, name: str) -> str:
        """The full Kafka topic name of a SPEC §4 topic (``jobs.parsed`` → ``jobstream.jobs.parsed``)."""
        return f"{self.topic_prefix}{name}"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """API_ALLOWED_HOSTS as lower-case names without a trailing dot (``problems`` reports bad entries)."""
        return tuple(entry.strip().lower().rstrip(".") for entry in self.api_allowed_hosts.split(",") if entry.strip())

    @property
    def mongo_url_redacted(self) -> str:
        parts = urlsplit(self.mongo_url)
        if parts.password is None:
            return self.mongo_url
        return self.mongo_url.replace(f":{parts.password}@", ":***@")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; report all problems at once, never a secret's value."""
        env = os.environ if environ is None else environ
        errors: list[str] = []
        values: dict[str, object] = {}
        defaults = cls()
        for f in fields(cls):
            name = f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            default = getattr(defaults, f.name)
            try:
                values[f.name] = _convert(raw, default)
                if f.name in AT_LEAST_ONE and int(raw) < 1:  # 0 would read as "not set"
                    errors.append(f"{name} must be >= 1 (leave it unset for the default), got {raw!r}")
                    del values[f.name]
            except ValueError:
                shown = "***" if f.name in ("api_token", "mongo_url") else repr(raw)
                kind = f"one of {', '.join(TRUE_WORDS + FALSE_WORDS)}" if isinstance(default, bool) else type(default).__name__
                errors.append(f"{name} must be {kind}, got {shown}")
        try:
            settings = cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:  # pragma: no cover - fields and values come from the same list
            raise SettingsError(str(exc)) from exc
        errors.extend(settings.problems())
        if errors:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(errors))
        return settings

    def problems(self) -> list[str]:
        """Range and shape checks that a type conversion alone cannot express."""
        found: list[str] = []
        if not self.mongo_url.startswith(("mongodb://", "mongodb+srv://")):
            found.append(f"MONGO_URL is not a mongodb:// URL: {self.mongo_url_redacted!r}")
        for server in self.kafka_bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                found.append(f"KAFKA_BOOTSTRAP_SERVERS entries must be host:port, got {server!r}")
        positive = {
            "IMPORT_INTERVAL_MINUTES": self.import_interval_minutes,
            "BATCH_SIZE": self.batch_size,
            "BATCH_WINDOW_SECONDS": self.batch_window_seconds,
            "TOPIC_PARTITIONS": self.topic_partitions,
            "FETCH_TIMEOUT_SECONDS": self.fetch_timeout_seconds,
            "MAX_FEED_BYTES": self.max_feed_bytes,
            "RAW_FEED_RETENTION_DAYS": self.raw_feed_retention_days,
            "RUN_TIMEOUT_SECONDS": self.run_timeout_seconds,
            "REPAIR_AFTER_SECONDS": self.repair_after_seconds,
            "RUNS_RETENTION_HOURS": self.runs_retention_hours,
            "MONGO_WRITE_BATCH": self.mongo_write_batch,
            "MONGO_INSERT_BATCH": self.mongo_insert_batch,
            "MONGO_MAX_INFLIGHT_WRITES": self.mongo_max_inflight_writes,
            "MONGO_TIMEOUT_SECONDS": self.mongo_timeout_seconds,
            "API_STORE_TIMEOUT_SECONDS": self.api_store_timeout_seconds,
            "PARSE_TIMEOUT_SECONDS": self.parse_timeout_seconds,
            "MAX_ITEMS_PER_FEED": self.max_items_per_feed,
            "MAX_SSE_CLIENTS": self.max_sse_clients,
            "MAX_FEEDS": self.max_feeds,
        }
        found.extend(f"{name} must be > 0, got {value}" for name, value in positive.items() if value <= 0)
        if self.kafka_max_message_bytes < MIN_MESSAGE_BYTES:
            found.append(f"KAFKA_MAX_MESSAGE_BYTES must be >= {MIN_MESSAGE_BYTES}, got {self.kafka_max_message_bytes}")
        if self.max_failures_kept < 0:
            found.append(f"MAX_FAILURES_KEPT must be >= 0, got {self.max_failures_kept}")
        for port_name, number in (("API_PORT", self.api_port), ("WORKER_METRICS_PORT", self.worker_metrics_port)):
            if not 0 <= number <= 65535:
                found.append(f"{port_name} must be a TCP port (0-65535), got {number}")
        if self.log_level.upper() not in LOG_LEVELS:
            found.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if not self.table_store.startswith(("memory://", "rocksdb://")):
            found.append(f"TABLE_STORE must be memory:// or rocksdb://, got {self.table_store!r}")
        for parse, value in ((parse_networks, self.fetch_allow_networks), (parse_ports, self.fetch_allow_ports)):
            try:
                parse(value)
            except ValueError as exc:
                found.append(str(exc))
        if self.api_reads_require_token and not self.api_token:
            found.append("API_READS_REQUIRE_TOKEN is on but API_TOKEN is not set: there is no token to require")
        found.extend(problem for entry in self.allowed_hosts if (problem := allowed_host_problem(entry)))
        needed = parse_memory_needed_mb(self.max_feed_bytes)
        if self.parse_max_memory_mb < needed:
            found.append(f"PARSE_MAX_MEMORY_MB must be at least MAX_FEED_BYTES in MiB + {PARSE_MEMORY_HEADROOM_MB} "
                         f"(a parse process holds the feed, then parses it), that is {needed}, got {self.parse_max_memory_mb}")
        if self.kafka_replication_factor < 0:
            found.append(f"KAFKA_REPLICATION_FACTOR must be >= 1, got {self.kafka_replication_factor}")
        if self.kafka_min_insync_replicas < 0:
            found.append(f"KAFKA_MIN_INSYNC_REPLICAS must be >= 1, got {self.kafka_min_insync_replicas}")
        if 0 < self.kafka_replication_factor < self.kafka_min_insync_replicas:
            found.append(f"KAFKA_MIN_INSYNC_REPLICAS ({self.kafka_min_insync_replicas}) must not exceed "
                         f"KAFKA_REPLICATION_FACTOR ({self.kafka_replication_factor}): no write could be acknowledged")
        concern = self.mongo_write_concern.strip()
        if concern != "majority" and not (concern.isdigit() and int(concern) >= 1):
            found.append(f"MONGO_WRITE_CONCERN must be majority or a number of members >= 1, got {self.mongo_write_concern!r}")
        if not 1 <= self.brokers <= MAX_BROKERS:
            found.append(f"BROKERS must be a whole number from 1 to {MAX_BROKERS}, got {self.brokers}")
        if self.loop_lag_report_seconds <= 0:
            found.append(f"LOOP_LAG_REPORT_SECONDS must be > 0, got {self.loop_lag_report_seconds}")
        return found


def allowed_host_problem(entry: str) -> str:
    """Why an API_ALLOWED_HOSTS entry is not a host name (``*``, ``*.example.com``, a name or an IP); empty if it is.

    Host names only: a port, scheme or path in the list would never match and lock every client out.
    """
    if entry == "*":
        return ""
    name = entry[2:] if entry.startswith("*.") else entry
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    labels = name.split(".")
    if ":" in name and all(c in "0123456789abcdef:." for c in name):  # an IPv6 address
        return ""
    if not name or len(name) > 253 or not all(label and len(label) <= 63 and label.replace("-", "").isalnum()
                                               and label.isascii() for label in labels):
        return f"API_ALLOWED_HOSTS entries must be host names (no scheme, port or path), got {entry!r}"
    return ""


def _convert(raw: str, default: object) -> object:
    if isinstance(default, bool):  # strict: a typo must not silently turn a guard off
        word = raw.lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(raw)
        return word in TRUE_WORDS
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw
