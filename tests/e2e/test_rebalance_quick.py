"""Issue 20's rebalance faults in their CI size: each once, injected at the moment the runs are requested.

``deploy/chaos.py --rebalance --quick`` starts a stack of its own (Kafka, FerretDB, two workers, the
API on free loopback ports), and for each fault requests a run of 16 feeds while a worker joins,
leaves gracefully, is killed -9 1-5 s after the request and restarted, or joins and then sees the
other killed. Every run must be final within 60 s of the last fault, with exact counts, ``jobs`` and
``jobs.changes``. ``make chaos`` runs 20 rounds of the same.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"^\[chaos\] (\d+) passed, (\d+) failed", re.MULTILINE)
FAULT_LINE = re.compile(r"^\[chaos\] fault=(\S+)\s+round=\d+ (PASS|FAIL) ", re.MULTILINE)


@pytest.mark.timeout(480)
def test_quick_rebalance_faults_lose_miscount_and_strand_nothing() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "chaos.py"), "--rebalance", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=420, check=False)
    output = result.stdout + result.stderr
    summary = SUMMARY.search(output)
    assert summary is not None, f"no summary line:\n{output[-4000:]}"
    faults = FAULT_LINE.findall(output)
    assert {fault for fault, _ in faults} == {"worker-join", "worker-leave", "worker-kill-early", "join-then-kill"}, output[-4000:]
    assert (int(summary[2]), result.returncode) == (0, 0), output[-6000:]
    assert int(summary[1]) == len(faults) == 4
