"""A worker says it is ready only when it consumes; its data folder is made or refused at start."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from streams.readiness import STALE_SECONDS, AppState, ReadinessProbe, judge, serve_probes
from streams.worker import writable_dir
from tests.support import ROOT, free_port

READY = AppState(joined=True, rebalancing=False, recovering=False, recovered=True, generation=3, partitions=4,
                 store_prepared=True)


def test_a_joined_recovered_worker_with_a_prepared_store_is_ready() -> None:
    state = judge(READY, now=10.0)
    assert (state.ready, state.reason, state.generation, state.partitions) == (True, "ready", 3, 4)


def test_a_worker_with_no_partitions_is_ready_once_it_knows() -> None:
    assert judge(replace(READY, partitions=0), now=0.0).ready


@pytest.mark.parametrize(("change", "reason"), [
    ({"joined": False}, "not yet joined its consumer group"),
    ({"rebalancing": True}, "consumer group rebalancing"),
    ({"recovering": True}, "recovering its tables from their changelogs"),
    ({"recovered": False}, "recovering its tables from their changelogs"),
    ({"store_prepared": False}, "preparing MongoDB (indexes, feed registry)"),
    ({"joined": False, "store_prepared": False}, "not yet joined its consumer group"),  # the first unmet one
])
def test_each_unmet_condition_is_named(change: dict[str, bool], reason: str) -> None:
    state = judge(replace(READY, **change), now=0.0)
    assert (state.ready, state.reason) == (False, reason)


def test_a_snapshot_the_loop_stopped_refreshing_is_not_ready() -> None:
    now = [100.0]
    probe = ReadinessProbe(clock=lambda: now[0])
    probe.snapshot = judge(READY, now=100.0)
    now[0] += STALE_SECONDS - 1
    assert probe.current().ready
    now[0] += 2
    stale = probe.current()
    assert not stale.ready and stale.reason == f"event loop has not answered for {STALE_SECONDS + 1:.0f}s"


def test_ready_answers_200_or_503_with_the_reason_and_metrics_beside_it() -> None:
    probe = ReadinessProbe()
    port = free_port()
    server = serve_probes(probe, "127.0.0.1", port)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)  # noqa: S310 - loopback
        assert refused.value.code == 503
        assert json.loads(refused.value.read()) == {"ready": False, "reason": "starting", "generation": 0, "partitions": 0}
        probe.snapshot = judge(READY, now=probe.clock())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:  # noqa: S310
            assert json.loads(response.read()) == {"ready": True, "reason": "ready", "generation": 3, "partitions": 4}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            assert response.status == 200 and b"# HELP " in response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_the_data_folder_is_created_with_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "state" / "worker" / "0"  # a fresh clone has no .state/worker
    writable_dir(target)
    assert target.is_dir() and list(target.iterdir()) == []  # the probe file is gone again


def test_a_worker_whose_data_folder_cannot_be_made_stops_with_a_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False,
                            env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(blocker / "0"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 2, result.stderr
    assert f"worker cannot start: DATA_DIR {blocker / '0'} is not a writable folder" in result.stderr
