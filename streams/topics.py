"""Create the pipeline's Kafka topics with the configured partition count and replication before anything uses them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams import replication
from streams.app import COMPACTED, TABLES, TOPICS, changelog_topic, leader_topic
from streams.replication import Replication, Shortfall
from streams.settings import Settings

logger = logging.getLogger(__name__)

TOPICS_READY_SECONDS = 30.0


@dataclass(frozen=True)
class TopicsReady:
    """What ``ensure_topics`` found: the replication it resolved, and existing topics that fall short of it."""

    replication: Replication
    topics: list[str]
    under_replicated: list[Shortfall] = field(default_factory=list)


def wanted_topics(settings: Settings) -> dict[str, tuple[int, bool]]:
    """Every topic jobstream creates: name → (partitions, compacted). Faust's changelogs and its
    leader topic included, so that they get the replication settings too (Faust would create them
    without ``min.insync.replicas``)."""
    wanted = {settings.topic(name): (settings.topic_partitions, name in COMPACTED) for name in TOPICS}
    wanted.update({changelog_topic(settings, table): (settings.topic_partitions, True) for table in TABLES})
    wanted[leader_topic(settings)] = (1, False)
    return wanted


async def ensure_topics(settings: Settings) -> TopicsReady:
    """Idempotent: existing topics are left as they are (Kafka cannot shrink partitions), but one with
    fewer replicas or a lower ``min.insync.replicas`` than wanted is reported (``streams.replication``).

    New topics take ``KAFKA_MAX_MESSAGE_BYTES`` as their ``max.message.bytes``, the same limit the
    producers use, whatever the broker's own default is, and the replication resolved against the
    cluster: ``KAFKA_REPLICATION_FACTOR`` replicas and ``min.insync.replicas`` =
    ``KAFKA_MIN_INSYNC_REPLICAS``. Raises ``ReplicationError`` when the settings ask for more
    replicas than the cluster has brokers.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        wanted = replication.resolve(settings, await replication.broker_count(admin))
        existing = set(await admin.list_topics())
        topics = wanted_topics(settings)
        missing = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=wanted.factor,
                topic_configs={"max.message.bytes": str(settings.kafka_max_message_bytes),
                               **wanted.topic_configs(),
                               **({"cleanup.policy": "compact"} if compacted else {})},
            )
            for name, (partitions, compacted) in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
            logger.info("created topics (replication factor %d, min.insync.replicas %d): %s", wanted.factor,
                        wanted.min_insync, ", ".join(t.name for t in missing))
        await until_served(admin, list(topics))
        found = await replication.audit(admin, sorted(topics), wanted)
        replication.report(found, wanted)
        return TopicsReady(wanted, sorted(topics), found)
    finally:
        await admin.close()


async def until_served(admin: AIOKafkaAdminClient, topics: list[str], timeout_seconds: float = TOPICS_READY_SECONDS) -> None:
    """Wait until the broker's metadata shows every topic with a leader for each partition.

    A new topic is not in the broker's metadata at once (on a freshly started broker it can take
    seconds). A worker whose first group assignment came before that was assigned none of the
    missing topics' partitions, and stayed idle: so the worker joins only after this. Past the
    deadline it goes on with a warning (Faust then reports the missing topics itself).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        described = await admin.describe_topics(topics)
        waiting = sorted(
            str(topic["topic"]) for topic in described
            if topic["error_code"] or not topic["partitions"] or any(p["error_code"] or p["leader"] < 0 for p in topic["partitions"])
        )
        if not waiting:
            return
        if loop.time() >= deadline:
            logger.warning("topics not served by the broker after %.0fs: %s", timeout_seconds, ", ".join(waiting))
            return
        await asyncio.sleep(0.2)
