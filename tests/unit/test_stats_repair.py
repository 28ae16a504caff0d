"""Stats.repair_stalled_runs(): a silent run is repaired once the consumers are idle, or after long enough anyway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agents import stats
from agents.stats import STUCK_FACTOR, Stats
from streams.settings import Settings

REPAIR_AFTER = 15.0


class Commands:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, key: str, value: dict[str, Any]) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def silent_run(seconds: float) -> dict[str, Any]:
    """An announced running run of 4 items with outcomes for 0 and 2, silent for ``seconds``."""
    last = datetime.now(UTC) - timedelta(seconds=seconds)
    return {"runId": "r1", "sourceUrl": "https://x/feed", "sourceName": "X", "trigger": "cli",
            "requestedAt": "2025-01-06T10:00:00Z", "status": "running", "announced": True, "totalFetched": 4,
            "seen": "BQ==", "lastProgressAt": last.isoformat().replace("+00:00", "Z")}


def stats_step(run: dict[str, Any], commands: Commands) -> Stats:
    settings = Settings.from_env({"REPAIR_AFTER_SECONDS": str(REPAIR_AFTER)})
    step = Stats(app=None, table={"r1": run}, topics=cast(Any, SimpleNamespace(commands=commands)), settings=settings,
                 store=cast(Any, None))
    step.unfinished.add("r1")
    return step


@pytest.mark.parametrize(("silent", "backlog", "repaired"), [
    (REPAIR_AFTER + 1, 0, True),  # idle consumers: silence means a loss
    (REPAIR_AFTER + 1, 7, False),  # busy consumers: wait for the backlog to drain
    (REPAIR_AFTER * STUCK_FACTOR + 1, 7, True),  # a backlog that never drains holds repairs back no longer
    (REPAIR_AFTER - 5, 0, False),
])
async def test_a_silent_run_is_repaired_unless_the_consumers_are_busy_but_not_forever(
    monkeypatch: pytest.MonkeyPatch, silent: float, backlog: int, repaired: bool
) -> None:
    async def lag(_app: Any, _prefix: str) -> dict[str, int]:
        return {"tp": backlog}

    monkeypatch.setattr(stats, "consumer_lag", lag)
    commands = Commands()
    await stats_step(silent_run(silent), commands).repair_stalled_runs()
    assert [c.get("repairSeqs") for c in commands.sent] == ([[1, 3]] if repaired else [])
