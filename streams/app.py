"""The Faust app, its topics and tables: the whole topology in one place.

Built by a function from a Settings object rather than at import time, so that importing this
module reads no environment and opens no connection, and so that tests can build isolated
pipelines (own topic prefix, own app id) side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT, StreamT, TopicT

from streams import faust_internals
from streams.settings import Settings

# SPEC §4 topics, plus ``jobs.upserts``: the dedupe agent's created/updated decisions waiting for
# the sink. jobs.changes is published only after the sink wrote, so downstream never sees a change
# that is not in MongoDB yet.
TOPICS = ("commands", "jobs.parsed", "jobs.upserts", "jobs.changes", "import.progress", "import.logs", "jobs.dlq")
COMPACTED = frozenset({"import.logs"})
TABLES = ("dedupe", "runs")


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog; created up front so the first start finds it in metadata."""
    return f"{settings.app_id}-{table}-changelog"


def leader_topic(settings: Settings) -> str:
    """Faust's leader-election topic (``faust.assignor.leader_assignor``): created up front with the others."""
    return f"{settings.app_id}-__assignor-__leader"


@dataclass(frozen=True)
class Topics:
    commands: TopicT
    parsed: TopicT
    upserts: TopicT
    changes: TopicT
    progress: TopicT
    logs: TopicT
    dlq: TopicT


@dataclass(frozen=True)
class Pipeline:
    """Everything the agents are attached to."""

    settings: Settings
    app: faust.App
    topics: Topics
    dedupe_table: faust.Table[str, bytes]
    runs_table: faust.Table[str, Any]

    def source(self, name: str) -> TopicT:
        """A topic as an agent reads it: keys and values as raw bytes, which nothing in Faust can fail to decode.

        The agent decodes each value itself (``agents/inbox.py``); sending goes through ``topics``.
        """
        return self.app.topic(self.settings.topic(name), key_type=None, value_type=None, value_serializer="raw",
                              partitions=self.settings.topic_partitions)


def create_app(settings: Settings) -> faust.App:
    faust_internals.install()  # before the app makes its consumer: see streams/faust_internals.py
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        store=settings.table_store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        # Topics Faust declares itself (changelogs, the leader topic, repartition topics) get the
        # replication resolved against the cluster (``streams.topics.ensure_topics`` creates those it
        # knows up front, with min.insync.replicas as well); 1 when unresolved (tests without a cluster).
        topic_replication_factor=settings.kafka_replication_factor or 1,
        # acks=all: a message is acknowledged once every in-sync replica has it (at least
        # min.insync.replicas); the producer is idempotent too (streams/faust_internals.py).
        producer_acks=-1,
        topic_allow_declare=True,
        web_enabled=False,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="json",
        # Offsets are committed often; exactness never depends on it (see agents/ docstrings).
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        # One limit for every message (see KAFKA_MAX_MESSAGE_BYTES): the producer refuses what the
        # topics would refuse, and the parse turns a posting over it into a failed item before that.
        producer_max_batch_size=min(512 * 1024, settings.kafka_max_message_bytes),
        producer_max_request_size=settings.kafka_max_message_bytes,
        consumer_max_fetch_size=max(8 * 1024 * 1024, settings.kafka_max_message_bytes),
        # Events an agent may hold unprocessed (decoded): envelopes carry up to 500 postings each, so 64
        # of them (32,000 postings) are more than a batch needs. 4096, the default, let a store-bound
        # sink buffer hundreds of MB; 256 still took a worker past 1 GiB on a 1M-posting re-import.
        stream_buffer_maxsize=64,
        table_cleanup_interval=60.0,
        # A killed worker's partitions move to the survivors after this long, not Kafka's default minute.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        logging_config=None,
    )


def rocksdb_options() -> dict[str, int]:
    """Memory bounds of one table partition's RocksDB (a worker opens one per table and partition).

    Faust's defaults are per database: 3 write buffers of 64 MiB, a 2 GiB block cache and a 500 MiB
    compressed cache, which a re-import of a million keys (one read each) fills. A fresh dict each
    time: the store pops entries from it.
    """
    return {"write_buffer_size": 8 * 2**20, "max_write_buffer_number": 2,
            "block_cache_size": 16 * 2**20, "block_cache_compressed_size": 4 * 2**20}


def create_pipeline(settings: Settings) -> Pipeline:
    """Declare topics and tables; agents attach themselves with ``agents.attach_all``."""
    app = create_app(settings)

    def topic(name: str) -> TopicT:
        return app.topic(
            settings.topic(name),
            key_type=str,
            value_type=None,
            partitions=settings.topic_partitions,
        )

    topics = Topics(
        commands=topic("commands"),
        parsed=topic("jobs.parsed"),
        upserts=topic("jobs.upserts"),
        changes=topic("jobs.changes"),
        progress=topic("import.progress"),
        logs=topic("import.logs"),
        dlq=topic("jobs.dlq"),
    )
    def table(name: str, value_type: type | None) -> Any:
        return app.Table(name, default=None, partitions=settings.topic_partitions, key_type=str, value_type=value_type,
                         options=rocksdb_options() if settings.table_store.startswith("rocksdb") else None)

    # The dedupe table's values are JSON bytes the dedupe step encodes and decodes itself (orjson), so
    # a read or write per posting skips Faust's serializer chain; they are the bytes Faust's json codec
    # wrote before, so tables and changelogs written by either read the same.
    dedupe_name, runs_name = TABLES
    dedupe_table: faust.Table[str, bytes] = table(dedupe_name, bytes)
    runs_table: faust.Table[str, Any] = table(runs_name, None)
    return Pipeline(settings, app, topics, dedupe_table, runs_table)


async def ack_all(stream: StreamT[Any], events: list[EventT[Any]]) -> None:
    for event in events:
        await stream.ack(event)


async def consumer_lag(app: faust.App, topic_prefix: str) -> dict[Any, int]:
    """Per assigned pipeline partition: messages between its end and what this worker committed."""
    consumer = app.consumer
    assigned = [tp for tp in consumer.assignment() if tp.topic.startswith(topic_prefix)]
    if not assigned:
        return {}
    ends = await consumer.highwaters(*assigned)
    committed = faust_internals.committed_offsets(consumer)
    lag = {}
    for tp in assigned:
        done = committed.get(tp) or await faust_internals.position_or_none(consumer, tp) or 0
        lag[tp] = max(0, ends.get(tp, 0) - done)
    return lag
