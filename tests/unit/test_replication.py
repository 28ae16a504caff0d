"""Replication settings (SPEC §4, §6): defaults resolved from the broker count, validation, and the report of
existing topics that fall short (log line, gauges, /health detail). No broker: fakes stand in for the admin client."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, Gauge

from api import kafka
from api.kafka import KafkaLink
from streams import faust_internals, replication
from streams.app import create_app
from streams.commands import producer_for
from streams.replication import Replication, ReplicationError, Shortfall, resolve, with_replication
from streams.settings import Settings, SettingsError


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))])
def test_defaults_follow_the_broker_count(brokers: int, expected: tuple[int, int]) -> None:
    wanted = resolve(Settings(), brokers)
    assert (wanted.factor, wanted.min_insync) == expected
    assert wanted.topic_configs() == {"min.insync.replicas": str(expected[1])}


def test_explicit_values_win_and_min_isr_defaults_to_rf_minus_one() -> None:
    assert resolve(Settings(kafka_replication_factor=2), 3) == Replication(2, 1, 3)
    assert resolve(Settings(kafka_replication_factor=3, kafka_min_insync_replicas=3), 5) == Replication(3, 3, 5)
    assert resolve(Settings(kafka_min_insync_replicas=1), 3) == Replication(3, 1, 3)


def test_more_replicas_than_brokers_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ReplicationError, match=r"KAFKA_REPLICATION_FACTOR is 3 but the Kafka cluster has 1 broker\(s\)"):
        resolve(Settings(kafka_replication_factor=3), 1)
    with pytest.raises(ReplicationError, match="KAFKA_MIN_INSYNC_REPLICAS is 3 but the replication factor is 2"):
        resolve(Settings(kafka_min_insync_replicas=3), 2)  # RF defaults to 2 on 2 brokers
    with pytest.raises(ReplicationError, match="no brokers"):
        resolve(Settings(), 0)


def test_resolved_settings_reach_faust() -> None:
    settings = with_replication(Settings(), Replication(3, 2, 3))
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    app = create_app(settings)
    assert app.conf.topic_replication_factor == 3
    assert app.conf.producer_acks == -1
    assert create_app(Settings()).conf.topic_replication_factor == 1  # unresolved (no cluster asked): as before


def test_settings_from_env_validate_the_replication_variables() -> None:
    settings = Settings.from_env({"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
                                  "MONGO_WRITE_CONCERN": "2", "BROKERS": "3"})
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas, settings.write_concern,
            settings.brokers) == (3, 2, 2, 3)
    defaults = Settings.from_env({})
    assert (defaults.kafka_replication_factor, defaults.kafka_min_insync_replicas, defaults.write_concern,
            defaults.brokers) == (0, 0, "majority", 1)
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"KAFKA_REPLICATION_FACTOR": "0", "KAFKA_MIN_INSYNC_REPLICAS": "x",
                           "MONGO_WRITE_CONCERN": "majorty", "BROKERS": "12"})
    message = str(bad.value)
    assert "KAFKA_REPLICATION_FACTOR must be >= 1 (leave it unset for the default), got '0'" in message
    assert "KAFKA_MIN_INSYNC_REPLICAS must be int, got 'x'" in message
    assert "MONGO_WRITE_CONCERN must be majority or a number of members >= 1, got 'majorty'" in message
    assert "BROKERS must be a whole number from 1 to 9, got 12" in message
    with pytest.raises(SettingsError, match=r"KAFKA_MIN_INSYNC_REPLICAS \(3\) must not exceed KAFKA_REPLICATION_FACTOR \(2\)"):
        Settings.from_env({"KAFKA_REPLICATION_FACTOR": "2", "KAFKA_MIN_INSYNC_REPLICAS": "3"})


async def test_producers_are_idempotent_with_acks_all() -> None:
    producer = producer_for(Settings())
    assert producer._txn_manager is not None  # aiokafka's idempotence (and acks=all, which it requires)
    faust_internals.install()
    from faust.transport.drivers.aiokafka import Producer

    assert Producer._settings_extra(cast(Any, None)) == {"acks": "all", "enable_idempotence": True}


class FakeAdmin:
    """describe_cluster / describe_topics / describe_configs as a broker answers them."""

    def __init__(self, brokers: int, replicas: dict[str, list[int]], min_isr: dict[str, str]) -> None:
        self.brokers, self.replicas, self.min_isr = brokers, replicas, min_isr

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": i} for i in range(1, self.brokers + 1)]}

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"topic": t, "error_code": 0 if t in self.replicas else 3,
                 "partitions": [{"partition": p, "replicas": list(range(n))} for p, n in enumerate(self.replicas.get(t, []))]}
                for t in topics]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        entries = [(0, "", 2, r.name, [("min.insync.replicas", self.min_isr[r.name], False, 1, False, [])])
                   for r in resources]
        return [SimpleNamespace(resources=entries)]


async def test_audit_names_topics_with_fewer_replicas_or_a_lower_min_isr() -> None:
    admin = FakeAdmin(3, {"ok": [3, 3], "few": [3, 1], "isr": [3, 3]}, {"ok": "2", "few": "2", "isr": "1"})
    wanted = resolve(Settings(), await replication.broker_count(cast(Any, admin)))
    found = await replication.audit(cast(Any, admin), ["ok", "few", "isr", "missing"], wanted)
    assert [s.topic for s in found] == ["few", "isr"]
    assert found[0].describe() == "few (1 replica(s), wanted 3)"
    assert found[1].describe() == "isr (min.insync.replicas 1, wanted 2)"
    assert replication.health_text(found) == ("degraded: 2 topic(s) under-replicated: few (1 replica(s), wanted 3), "
                                              "isr (min.insync.replicas 1, wanted 2)")


def test_a_single_broker_stack_has_nothing_to_report() -> None:
    wanted = resolve(Settings(), 1)
    assert replication.shortfalls({"jobstream.commands": 1}, {"jobstream.commands": 1}, wanted) == []


def test_the_report_is_a_log_line_per_topic_and_gauges(caplog: pytest.LogCaptureFixture) -> None:
    wanted = Replication(3, 2, 3)
    found = [Shortfall("jobstream.commands", 1, 1, wanted)]
    with caplog.at_level(logging.WARNING, logger="streams.replication"):
        replication.report(found, wanted)
    assert "topic under-replicated: jobstream.commands (1 replica(s), wanted 3; min.insync.replicas 1, wanted 2)" in caplog.text
    assert "1 topic(s) below KAFKA_REPLICATION_FACTOR=3 / KAFKA_MIN_INSYNC_REPLICAS=2" in caplog.text
    registry = CollectorRegistry()
    count = Gauge("under", "", registry=registry)
    per_topic = Gauge("under_topic", "", ["topic"], registry=registry)
    replication.publish(["jobstream.commands", "jobstream.jobs.dlq"], found, count, per_topic)
    assert registry.get_sample_value("under") == 1
    assert registry.get_sample_value("under_topic", {"topic": "jobstream.commands"}) == 1
    assert registry.get_sample_value("under_topic", {"topic": "jobstream.jobs.dlq"}) == 0


async def test_health_names_under_replicated_topics_as_degraded(monkeypatch: pytest.MonkeyPatch) -> None:
    """/health's kafka part (api/kafka.py): ``degraded: ...`` naming the topic; the audit is cached."""
    topics = sorted(kafka.wanted_topics(Settings()))
    admin = FakeAdmin(3, {t: [3] * 8 for t in topics} | {"jobstream.jobs.parsed": [1] * 8}, dict.fromkeys(topics, "2"))
    audits: list[list[Shortfall]] = []
    link = KafkaLink(Settings(), on_audit=lambda _topics, found: audits.append(found))

    async def admin_client() -> Any:
        return admin

    monkeypatch.setattr(link, "_admin_client", admin_client)

    async def metadata() -> Any:
        return SimpleNamespace(brokers=lambda: [1, 2, 3])

    link.producer = cast(Any, SimpleNamespace(client=SimpleNamespace(fetch_all_metadata=metadata)))
    assert await link.check(1.0) == "degraded: 1 topic(s) under-replicated: jobstream.jobs.parsed (1 replica(s), wanted 3)"
    admin.replicas["jobstream.jobs.parsed"] = [3] * 8
    assert (await link.check(1.0)).startswith("degraded"), "cached for REPLICATION_AUDIT_SECONDS"
    link._audited_at = None
    assert await link.check(1.0) == "ok"
    assert [len(found) for found in audits] == [1, 0]
