"""The suite's cluster mode: ``BROKERS=3 make run`` on ports and a state folder of its own (SPEC §4, §7, issue 23).

Starts a three-node KRaft cluster, FerretDB, a worker and the API the way a user does, and shows that
every topic on the cluster (the pipeline's, Faust's changelogs and leader topic, Kafka's own
``__consumer_offsets``) has 3 replicas and ``min.insync.replicas`` 2, the pipeline's set on the topic
itself, not inherited from the brokers; that a feed imports exactly through it; that a topic that
already existed with 1 replica is reported by name; and that ``make stop`` leaves no process behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.replication import fewest_replicas
from streams.settings import Settings
from streams.topics import ensure_topics, wanted_topics
from tests.e2e.test_make_run import UserStack, alive, final_run, request, stopped_cleanly, user_env
from tests.support import FeedServer, rss

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

BROKERS = 3
ITEMS = 50
MAKE_SECONDS = 300  # three JVMs starting on 2 busy cores, then a worker joining
TOPIC_CONFIG = 1  # DescribeConfigs' config source DYNAMIC_TOPIC_CONFIG: set on the topic itself


@dataclass
class ClusterStack(UserStack):
    make_seconds: float = MAKE_SECONDS

    @property
    def bootstrap(self) -> str:
        port = int(self.env["JOBSTREAM_KAFKA_PORT"])
        return ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(BROKERS))


@pytest.fixture
def cluster_stack(tmp_path: Path) -> Iterator[ClusterStack]:
    env = user_env(tmp_path, kafka_ports=2 * BROKERS, BROKERS=str(BROKERS), WORKERS="1")
    stack = ClusterStack(env, tmp_path / "state")
    try:
        yield stack
    finally:
        stopped_cleanly(stack)


async def describe(bootstrap: str) -> dict[str, tuple[int, int | None, int | None]]:
    """Every topic on the cluster → (fewest replicas of a partition, effective min.insync.replicas, its config source)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        topics = await admin.list_topics()
        replicas = fewest_replicas(await admin.describe_topics(topics))
        found: dict[str, tuple[int, int | None, int | None]] = {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None}) for topic in topics]
        for response in await admin.describe_configs(resources):
            for _error, _message, _type, name, entries in (resource[:5] for resource in response.resources):
                entry = next((e for e in entries if e[0] == "min.insync.replicas"), None)
                found[name] = (replicas.get(name, 0), int(entry[1]) if entry else None, entry[3] if entry else None)
        return found
    finally:
        await admin.close()


async def test_every_topic_on_the_local_cluster_has_rf_3_and_min_isr_2(
        cluster_stack: ClusterStack, feed_server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    result = await asyncio.to_thread(cluster_stack.make, "run")
    up_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = cluster_stack.pids("kafka")
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"], result.stdout
    assert all(alive(pid) for pid in nodes.values())
    for index in range(1, BROKERS + 1):  # each node: its own data folder and log
        assert (cluster_stack.state / f"kafka-{index}" / "data" / "meta.properties").exists()
        assert (cluster_stack.state / "logs" / f"kafka-{index}.log").exists()

    # A feed imports exactly through the cluster (acks=all, idempotent producers, RF 3 changelogs).
    url = feed_server.put(f"cluster-{time.time_ns()}.xml", rss([{"guid": f"g{i}", "title": f"Job {i}"} for i in range(ITEMS)]))
    async with aiohttp.ClientSession() as session:
        await request(session, "POST", f"{cluster_stack.api}/api/feeds", 201, json={"url": url, "name": "cluster feed"})
        runs = await request(session, "POST", f"{cluster_stack.api}/api/import/run", 202, json={"feeds": [url]})
        (run_id,) = [run["runId"] for run in runs["runs"]]
        run = await final_run(session, cluster_stack.api, run_id, 120)
        health = await request(session, "GET", f"{cluster_stack.api}/health", 200)
    assert (run.get("status"), run.get("totalFetched"), run.get("newJobs"), run.get("failedJobs")) == (
        "completed", ITEMS, ITEMS, 0), run
    assert health == {"status": "ok", "kafka": "ok", "mongo": "ok", "workers": "ok"}

    described = await describe(cluster_stack.bootstrap)
    settings = Settings(topic_partitions=4)
    ours = set(wanted_topics(settings))
    assert ours <= set(described), sorted(ours - set(described))
    assert "__consumer_offsets" in described
    short = {topic: (rf, isr) for topic, (rf, isr, _source) in described.items() if (rf, isr) != (3, 2)}
    assert not short, f"topics without RF 3 / min ISR 2: {short}"
    inherited = sorted(topic for topic in ours if described[topic][2] != TOPIC_CONFIG)
    assert not inherited, f"min.insync.replicas not set on these topics themselves: {inherited}"

    status = await asyncio.to_thread(cluster_stack.make, "status", 60)
    assert status.returncode == 0, status.stdout + status.stderr
    for index in range(1, BROKERS + 1):
        assert f"kafka-{index}   running (pid {nodes[f'kafka-{index}']})" in status.stdout, status.stdout

    # A topic that exists already with 1 replica is reported by name, not silently used.
    other = Settings(kafka_bootstrap_servers=cluster_stack.bootstrap, topic_prefix=f"under{time.time_ns()}.",
                     app_id=f"under{time.time_ns()}", topic_partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster_stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(other.topic("commands"), 2, 1, topic_configs={"min.insync.replicas": "1"})])
    finally:
        await admin.close()
    ready = await ensure_topics(other)
    assert (ready.replication.factor, ready.replication.min_insync, ready.replication.brokers) == (3, 2, 3)
    assert [s.describe() for s in ready.under_replicated] == [
        f"{other.topic('commands')} (1 replica(s), wanted 3; min.insync.replicas 1, wanted 2)"]
    assert f"topic under-replicated: {other.topic('commands')}" in caplog.text
    print(f"BROKERS=3 make run: {up_seconds:.1f}s to a ready cluster, worker and API")
