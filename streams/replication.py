"""How many copies of every topic jobstream keeps, resolved against the cluster, and which topics fall short.

``KAFKA_REPLICATION_FACTOR`` and ``KAFKA_MIN_INSYNC_REPLICAS`` (SPEC §4, §6) default to values that
depend on the cluster: 3 replicas on a cluster of 3 or more brokers, else one per broker, and a
min ISR of one less than that (at least 1). So they are resolved at start, once the broker count is
known (``resolve``). Topics that exist already are never changed here (Kafka would need a partition
reassignment); one with fewer replicas or a lower ``min.insync.replicas`` than wanted is reported
(``audit``): named in a warning, in the ``jobstream_kafka_topics_under_replicated`` gauges, and in
the API's ``/health``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_REPLICATION_FACTOR = 3
MIN_INSYNC = "min.insync.replicas"


class ReplicationError(RuntimeError):
    """The settings ask for more replicas than the cluster has brokers; the message says which."""


@dataclass(frozen=True)
class Replication:
    """The replication every topic jobstream creates gets."""

    factor: int
    min_insync: int
    brokers: int

    def topic_configs(self) -> dict[str, str]:
        return {MIN_INSYNC: str(self.min_insync)}


def resolve(settings: Settings, brokers: int) -> Replication:
    """RF and min ISR from the settings, with the defaults filled in from the broker count.

    Raises ReplicationError when an explicit RF exceeds the brokers (Kafka would refuse to create the
    topics) or when min ISR exceeds RF (no write could ever be acknowledged).
    """
    if brokers < 1:
        raise ReplicationError("the Kafka cluster reports no brokers")
    factor = settings.kafka_replication_factor or min(DEFAULT_REPLICATION_FACTOR, brokers)
    if factor > brokers:
        raise ReplicationError(f"KAFKA_REPLICATION_FACTOR is {factor} but the Kafka cluster has {brokers} broker(s): "
                               f"lower it, or start more brokers (BROKERS=3 make run)")
    min_insync = settings.kafka_min_insync_replicas or max(1, factor - 1)
    if min_insync > factor:
        raise ReplicationError(f"KAFKA_MIN_INSYNC_REPLICAS is {min_insync} but the replication factor is {factor}: "
                               "no write could ever be acknowledged")
    return Replication(factor, min_insync, brokers)


def with_replication(settings: Settings, replication: Replication) -> Settings:
    """``settings`` with RF and min ISR resolved (what ``create_pipeline`` gives Faust)."""
    return replace(settings, kafka_replication_factor=replication.factor,
                   kafka_min_insync_replicas=replication.min_insync)


@dataclass(frozen=True)
class Shortfall:
    """An existing topic with fewer replicas (on its least replicated partition) or a lower min ISR than wanted."""

    topic: str
    replicas: int
    min_insync: int | None  # the topic's effective min.insync.replicas; None if the broker did not say
    wanted: Replication

    def describe(self) -> str:
        parts = []
        if self.replicas < self.wanted.factor:
            parts.append(f"{self.replicas} replica(s), wanted {self.wanted.factor}")
        if self.min_insync is not None and self.min_insync < self.wanted.min_insync:
            parts.append(f"min.insync.replicas {self.min_insync}, wanted {self.wanted.min_insync}")
        return f"{self.topic} ({'; '.join(parts)})"


def shortfalls(replicas: Mapping[str, int], min_insync: Mapping[str, int | None], wanted: Replication) -> list[Shortfall]:
    """The topics of ``replicas`` (topic → fewest replicas of its partitions) that fall short of ``wanted``, by name."""
    found = []
    for topic in sorted(replicas):
        isr = min_insync.get(topic)
        if replicas[topic] < wanted.factor or (isr is not None and isr < wanted.min_insync):
            found.append(Shortfall(topic, replicas[topic], isr, wanted))
    return found


async def broker_count(admin: AIOKafkaAdminClient) -> int:
    """Brokers the cluster's metadata lists (live brokers: a node that is down at this moment is not counted)."""
    cluster = await admin.describe_cluster()
    return len(cluster.get("brokers") or [])


def fewest_replicas(described: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Topic → the replica count of its least replicated partition, from ``describe_topics``."""
    return {str(topic["topic"]): min((len(p.get("replicas") or ()) for p in topic["partitions"]), default=0)
            for topic in described if not topic["error_code"] and topic["partitions"]}


async def min_insync_of(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, int | None]:
    """Each topic's effective ``min.insync.replicas`` (its own, else the broker's default)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic, {MIN_INSYNC: None}) for topic in topics]
    if not resources:
        return {}
    found: dict[str, int | None] = {}
    for response in await admin.describe_configs(resources):
        for error_code, _message, _type, name, entries in (resource[:5] for resource in response.resources):
            value = next((entry[1] for entry in entries if entry[0] == MIN_INSYNC), None) if not error_code else None
            found[str(name)] = int(value) if value is not None and str(value).isdigit() else None
    return found


async def audit(admin: AIOKafkaAdminClient, topics: list[str], wanted: Replication) -> list[Shortfall]:
    """The topics among ``topics`` that exist with fewer replicas or a lower min ISR than ``wanted``."""
    replicas = fewest_replicas(await admin.describe_topics(topics))
    return shortfalls(replicas, await min_insync_of(admin, list(replicas)), wanted)


def report(found: list[Shortfall], wanted: Replication) -> None:
    """One warning per topic that falls short, naming it and what to do (the gauges are the caller's)."""
    for shortfall in found:
        logger.warning("topic under-replicated: %s; jobstream does not change existing topics: reassign its partitions "
                       "(kafka-reassign-partitions) and set min.insync.replicas (kafka-configs), or recreate it",
                       shortfall.describe())
    if found:
        logger.warning("%d topic(s) below KAFKA_REPLICATION_FACTOR=%d / KAFKA_MIN_INSYNC_REPLICAS=%d (cluster of %d "
                       "broker(s)): a broker lost may lose their acknowledged messages",
                       len(found), wanted.factor, wanted.min_insync, wanted.brokers)


class GaugeLike(Protocol):
    def set(self, value: float) -> None: ...


class LabelledGauge(Protocol):
    def labels(self, *, topic: str) -> GaugeLike: ...


def publish(topics: Iterable[str], found: list[Shortfall], count: GaugeLike, per_topic: LabelledGauge) -> None:
    """Set the under-replication gauges: the count, and 1 or 0 per topic (so a topic fixed since reads 0)."""
    short = {shortfall.topic for shortfall in found}
    count.set(len(short))
    for topic in topics:
        per_topic.labels(topic=topic).set(1 if topic in short else 0)


def health_text(found: list[Shortfall]) -> str:
    """``/health``'s kafka part for topics that fall short: names them, and no broker address."""
    return f"degraded: {len(found)} topic(s) under-replicated: " + ", ".join(s.describe() for s in found)
