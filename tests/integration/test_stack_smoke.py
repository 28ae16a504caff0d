"""The local stack is real: Kafka answers produce/consume, the MongoDB wire protocol enforces unique indexes."""

from __future__ import annotations

import pymongo
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo.errors import DuplicateKeyError

from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def test_kafka_round_trip_through_the_real_broker(stack: Stack, unique: str) -> None:
    topic = f"smoke-{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, key=f"k{i}".encode(), value=f"hello {i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka, group_id=f"g-{unique}", auto_offset_reset="earliest")
    await consumer.start()
    try:
        received: list[bytes] = []
        while len(received) < 3:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no message within 10s"
            received.extend(record.value for records in batches.values() for record in records if record.value)
    finally:
        await consumer.stop()
    assert sorted(received) == [b"hello 0", b"hello 1", b"hello 2"]


def test_mongo_insert_find_and_duplicate_key(stack: Stack, unique: str) -> None:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000)
    db = client[f"smoke_{unique}"]
    try:
        db.things.create_index("key", unique=True)
        db.things.insert_one({"key": "a", "n": 1})
        assert db.things.find_one({"key": "a"}, {"_id": 0}) == {"key": "a", "n": 1}
        with pytest.raises(DuplicateKeyError):
            db.things.insert_one({"key": "a", "n": 2})
        assert db.things.count_documents({}) == 1
    finally:
        client.drop_database(db.name)
        client.close()
