"""The API's two Kafka clients: a producer that requests runs, and the import.logs follower behind SSE."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from api.events import LogHub, snapshot_from
from api.queries import ApiError
from streams import replication
from streams.commands import Send, aiokafka_sender, producer_for
from streams.replication import Shortfall
from streams.retry import Backoff, Retry, retry
from streams.settings import Settings
from streams.topics import ensure_topics, wanted_topics

logger = logging.getLogger(__name__)

KAFKA_BACKOFF = Backoff(base=0.5, cap=30.0)  # no limit: the API serves reads meanwhile
REPLICATION_AUDIT_SECONDS = 60.0  # /health checks the topics' replication at most this often


class KafkaLink:
    """A producer that is (re)started in the background, so the API serves reads while Kafka is away."""

    def __init__(self, settings: Settings,
                 on_audit: Callable[[list[str], list[Shortfall]], None] | None = None) -> None:
        """``on_audit(topics, shortfalls)`` is told each replication audit's result (the API's gauges)."""
        self.settings = settings
        self.on_audit = on_audit
        self.under_replicated: list[Shortfall] = []
        self._audited_at: float | None = None
        self.producer: AIOKafkaProducer | None = None
        self.started = asyncio.Event()
        self.last_error = "not connected yet"
        # Opened by the first workers check (group-less: they only read offsets and the group's state).
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def connect(self) -> None:
        """Retry with backoff until the producer is up; aiokafka handles broker reconnects after that."""

        async def start() -> AIOKafkaProducer:
            producer = producer_for(self.settings)
            try:
                await producer.start()
            except Exception as exc:  # any failure means "retry later"; logged
                self.last_error = f"{type(exc).__name__}: {exc}"
                await producer.stop()
                raise
            return producer

        def log_retry(attempt: Retry) -> None:
            logger.warning("Kafka producer not started error=%s retry_in=%.1fs", self.last_error, attempt.delay)

        self.producer = await retry(start, KAFKA_BACKOFF, on_retry=log_retry)
        self.started.set()
        logger.info("Kafka producer connected bootstrap=%s", self.settings.kafka_bootstrap_servers)

    async def sender(self, wait_seconds: float) -> Send:
        """The Send of ``streams.commands``, or a 503 when Kafka is not reachable within ``wait_seconds``."""
        try:
            await asyncio.wait_for(self.started.wait(), wait_seconds)
        except TimeoutError:
            # The reason (broker addresses, exception text) is in the log, not in the answer.
            logger.warning("run request refused: Kafka producer not connected error=%s", self.last_error)
            raise ApiError(503, "Kafka unavailable") from None
        assert self.producer is not None  # noqa: S101 - set before ``started``
        return aiokafka_sender(self.producer)

    async def check(self, timeout: float) -> str:
        """``ok`` when the cluster answers a metadata request in time, else ``error: <which part failed>``.

        The answer names no broker address and no exception text (/health is public); the log has them.
        """
        if self.producer is None:
            logger.warning("health: Kafka producer not connected error=%s", self.last_error)
            return "error: unreachable"
        try:
            metadata = await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout)
        except TimeoutError:
            logger.warning("health: no Kafka metadata answer within %gs", timeout)
            return f"error: no metadata answer within {timeout:g}s"
        except Exception as exc:  # reported to the caller as a failed metadata request, not raised
            logger.warning("health: Kafka metadata request failed error=%s: %s", type(exc).__name__, exc)
            return "error: metadata request failed"
        if not metadata.brokers():
            return "error: no brokers in metadata"
        found = await self.replication_audit(timeout)
        return replication.health_text(found) if found else "ok"

    async def replication_audit(self, timeout: float) -> list[Shortfall]:
        """The pipeline's topics that fall short of the replication settings (SPEC §4), from an audit at most
        ``REPLICATION_AUDIT_SECONDS`` old; the last answer while the cluster does not answer one.

        A new shortfall is logged as a warning naming the topic; ``on_audit`` gets every result.
        """
        loop = asyncio.get_running_loop()
        if self._audited_at is not None and loop.time() - self._audited_at < REPLICATION_AUDIT_SECONDS:
            return self.under_replicated
        try:
            admin = await self._admin_client()
            topics = sorted(wanted_topics(self.settings))
            wanted = replication.resolve(self.settings, await asyncio.wait_for(replication.broker_count(admin), timeout))
            found = await asyncio.wait_for(replication.audit(admin, topics, wanted), timeout)
        except Exception as exc:  # the metadata part of /health covers a broker away; keep the last answer
            logger.warning("health: replication audit failed error=%s: %s", type(exc).__name__, exc)
            return self.under_replicated
        self._audited_at = loop.time()
        if {s.topic for s in found} - {s.topic for s in self.under_replicated}:
            replication.report(found, wanted)
        self.under_replicated = found
        if self.on_audit is not None:
            self.on_audit(topics, found)
        return found

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers, request_timeout_ms=5000)
            await admin.start()
            self._admin = admin
        return self._admin

    async def workers_check(self, timeout: float) -> tuple[str, bool]:
        """Whether the workers consume: ``(text, healthy)`` for /health's ``workers`` part.

        Unhealthy only when run requests wait on ``commands`` and the consumer group (APP_ID) has no
        member: then nothing will ever start those runs, and the dashboard says so instead of showing
        runs that stay pending. No member and nothing waiting is ``idle`` and healthy (an API may run
        before its workers). Names the group and counts, never a host.
        """
        if self.producer is None:
            return "unknown: Kafka unreachable", True  # the kafka part already says why
        try:
            members, waiting = await asyncio.wait_for(self._group_and_backlog(), timeout)
        except TimeoutError:
            return f"unknown: no group answer within {timeout:g}s", True
        except Exception as exc:  # reported as unknown, not raised: the kafka part covers the broker itself
            logger.warning("health: consumer group check failed error=%s: %s", type(exc).__name__, exc)
            return "unknown: consumer group check failed", True
        group = self.settings.app_id
        if members:
            return "ok", True
        if waiting:
            return (f"error: {waiting} run request(s) waiting on {self.settings.topic('commands')} and no worker "
                    f"in consumer group {group!r} (start one: `make run` or `jobstream worker`)"), False
        return f"idle: no worker in consumer group {group!r}", True

    async def _group_and_backlog(self) -> tuple[int, int]:
        """Members of the workers' group, and commands produced but not committed by it."""
        admin = await self._admin_client()
        if self._offsets is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None,
                                        enable_auto_commit=False)
            await consumer.start()
            self._offsets = consumer
        group = self.settings.app_id
        (described,) = await admin.describe_consumer_groups([group])
        members = sum(len(entry[5]) for entry in described.groups if entry[1] == group)
        if members:
            return members, 0
        topic = self.settings.topic("commands")
        assert self.producer is not None  # noqa: S101 - checked by the caller
        partitions = [TopicPartition(topic, p) for p in sorted(await self.producer.partitions_for(topic))]
        if not partitions:
            return 0, 0
        ends = await self._offsets.end_offsets(partitions)
        starts = await self._offsets.beginning_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        waiting = 0
        for tp in partitions:
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else starts[tp]
            waiting += max(0, ends[tp] - done)
        return 0, waiting

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self._offsets is not None:
            await self._offsets.stop()
        if self._admin is not None:
            await self._admin.close()


async def partitions_of(settings: Settings, topic: str) -> set[int]:
    """The topic's partition numbers from a fresh metadata request (a group-less consumer has none cached)."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10000)
    try:
        await client.bootstrap()
        numbers = (await client.fetch_all_metadata()).partitions_for_topic(topic)
    finally:
        await client.close()
    if not numbers:
        raise RuntimeError(f"topic {topic} has no partitions in metadata")
    return set(numbers)


async def follow_import_logs(settings: Settings, hub: LogHub, ready: asyncio.Event,
                             on_record: Callable[[], None] | None = None) -> None:
    """Feed the hub from ``import.logs``: no consumer group, all partitions, from the end.

    Without a group every API instance sees every snapshot. After an error the consumer is rebuilt
    and continues from the offsets already delivered, so a Kafka hiccup loses no event.
    """
    topic = settings.topic("import.logs")
    positions: dict[TopicPartition, int] = {}

    def log_retry(attempt: Retry) -> None:
        logger.warning("import.logs follower error=%s: %s retry_in=%.1fs", type(attempt.error).__name__, attempt.error,
                       attempt.delay)

    while True:
        # A fresh back-off for each connection: one that worked and was lost later starts again at the base delay.
        consumer = await retry(partial(open_follower, settings, topic, positions), KAFKA_BACKOFF, on_retry=log_retry)
        ready.set()
        try:
            await deliver(consumer, positions, hub, on_record)
        except Exception as exc:  # the follower must outlive broker outages
            logger.warning("import.logs follower error=%s: %s, reconnecting", type(exc).__name__, exc)
        finally:
            await consumer.stop()


async def open_follower(settings: Settings, topic: str, positions: dict[TopicPartition, int]) -> AIOKafkaConsumer:
    """A group-less consumer on every partition of ``topic``: at ``positions`` where known, else at the end.

    The end is resolved now (and kept in ``positions``), before anyone produces, so no event is missed.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="latest")
    try:
        await ensure_topics(settings)
        partitions = [TopicPartition(topic, number) for number in sorted(await partitions_of(settings, topic))]
        await consumer.start()
        consumer.assign(partitions)
        fresh = [tp for tp in partitions if tp not in positions]
        if fresh:
            await consumer.seek_to_end(*fresh)
        for tp in partitions:
            if tp in positions:
                consumer.seek(tp, positions[tp])
            else:
                positions[tp] = await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    logger.info("following %s partitions=%d", topic, len(partitions))
    return consumer


async def deliver(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int], hub: LogHub,
                  on_record: Callable[[], None] | None) -> None:
    """Publish every snapshot read to the hub, forever; ``positions`` moves past each record first (a record
    that breaks the follower is not read again)."""
    while True:
        batches = await consumer.getmany(timeout_ms=1000)
        for tp, records in batches.items():
            for record in records:
                positions[tp] = record.offset + 1
                snapshot = snapshot_from(record.value)
                if snapshot is not None:
                    hub.publish(snapshot)
                    if on_record is not None:
                        on_record()
