"""Create the pipeline's Kafka topics with the configured partition count before anything uses them."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.app import COMPACTED, TABLES, TOPICS, changelog_topic
from streams.settings import Settings

logger = logging.getLogger(__name__)


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
    finally:
        await admin.close()
