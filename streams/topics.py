"""Create the pipeline's Kafka topics with the configured partition count before anything uses them."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.app import COMPACTED, TABLES, TOPICS, changelog_topic
from streams.settings import Settings

logger = logging.getLogger(__name__)

TOPICS_READY_SECONDS = 30.0


async def ensure_topics(settings: Settings) -> None:
    """Idempotent: existing topics are left as they are (Kafka cannot shrink partitions).

    New topics take ``KAFKA_MAX_MESSAGE_BYTES`` as their ``max.message.bytes``, the same limit the
    producers use, whatever the broker's own default is.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {settings.topic(name): name in COMPACTED for name in TOPICS}
        wanted.update({changelog_topic(settings, table): True for table in TABLES})
        missing = [
            NewTopic(
                name=name,
                num_partitions=settings.topic_partitions,
                replication_factor=1,
                topic_configs={"max.message.bytes": str(settings.kafka_max_message_bytes),
                               **({"cleanup.policy": "compact"} if compacted else {})},
            )
            for name, compacted in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
            logger.info("created topics: %s", ", ".join(t.name for t in missing))
        await until_served(admin, list(wanted))
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
