"""ensure_topics waits until the broker serves every topic: a worker that joined before would be assigned none of them."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from streams.topics import until_served


class FakeAdmin:
    """Answers describe_topics as a freshly started broker does: unknown, then leaderless, then served."""

    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers, self.calls = answers, 0

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


def topic(name: str, error: int = 0, leaders: tuple[int, ...] = (1, 1)) -> dict[str, Any]:
    return {"topic": name, "error_code": error,
            "partitions": [{"partition": i, "error_code": 0, "leader": leader} for i, leader in enumerate(leaders)]}


async def test_waits_until_every_partition_has_a_leader() -> None:
    admin = FakeAdmin([
        [topic("a", error=3, leaders=()), topic("b")],
        [topic("a", leaders=(1, -1)), topic("b")],
        [topic("a"), topic("b")],
    ])
    await until_served(cast(Any, admin), ["a", "b"], timeout_seconds=5.0)
    assert admin.calls == 3


async def test_gives_up_with_a_warning_past_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin([[topic("a"), topic("b", leaders=(-1,))]])
    with caplog.at_level(logging.WARNING, logger="streams.topics"):
        await until_served(cast(Any, admin), ["a", "b"], timeout_seconds=0.3)
    assert admin.calls >= 2
    assert "topics not served by the broker after 0s: b" in caplog.text
