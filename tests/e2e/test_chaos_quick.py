"""The chaos runs in their CI size, each against a stack of its own, and nothing lost.

``deploy/chaos.py --quick`` (issue 9) starts its own Kafka, FerretDB, two workers and an API on free
loopback ports (never the suite's shared stack), imports a few thousand postings per fault while it
kills a worker, Kafka and the store, stops the store and restarts the API under an SSE client, and
checks counts, ``jobs``, ``jobs.changes`` and the SSE client against ground truth. About two minutes.

``--rebalance --quick`` (issue 20) requests runs of 16 feeds at the moment the group changes: a worker
joins, leaves gracefully, is killed -9 1-5 s after the request and restarted, or joins and then sees
the other killed; every run must be final within 60 s of the last fault, exact. ``make chaos`` runs
20 rounds of these.
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
CLASSIC = {"worker-kill", "kafka-kill", "store-kill", "store-stop", "api-restart"}
REBALANCE = {"worker-join", "worker-leave", "worker-kill-early", "join-then-kill"}


# Issue 20 is open: after a worker dies mid-rebalance, the dedupe table of a partition's next owner can
# disagree with MongoDB for a few postings (reproduced at wave 12 of `chaos.py --rebalance --rounds 3`,
# and once in round 1 on a fresh clone). The round still runs and reports; a pass shows as XPASS.
KNOWN_OPEN = pytest.mark.xfail(reason="issue 20: dedupe table state after a kill mid-rebalance (open)", strict=False)


@pytest.mark.timeout(480)
@pytest.mark.parametrize(("options", "faults"), [((), CLASSIC), pytest.param(("--rebalance",), REBALANCE, marks=KNOWN_OPEN)],
                         ids=["faults", "rebalance"])
def test_quick_chaos_run_loses_miscounts_and_strands_nothing(options: tuple[str, ...], faults: set[str]) -> None:
    # The subprocess is SIGKILLed at the timeout; what it started dies with it (PR_SET_PDEATHSIG).
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "chaos.py"), "--quick", *options], cwd=ROOT,
                            capture_output=True, text=True, timeout=420, check=False)
    output = result.stdout + result.stderr
    summary = SUMMARY.search(output)
    assert summary is not None, f"no summary line:\n{output[-4000:]}"
    passed, failed = int(summary[1]), int(summary[2])
    seen = FAULT_LINE.findall(output)
    assert {fault for fault, _ in seen} == faults, output[-4000:]
    assert (failed, result.returncode) == (0, 0), output[-6000:]
    assert passed == len(seen) == len(faults)
