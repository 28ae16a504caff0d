"""Classify a posting as created / updated / unchanged from the dedupe table's memory of its key.

The table value remembers, besides fingerprint and version, the last few ``(runId, seq)`` that
touched the key and the outcome each got. A replayed event (at-least-once delivery after a crash)
is recognised and given its original outcome instead of being re-classified as ``unchanged``,
which is what keeps the counts exact without Kafka transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["created", "updated", "unchanged"]
RECENT_KEPT = 8


@dataclass(frozen=True, slots=True)
class Classification:
    """What the dedupe agent does with one posting, and the table value to store."""

    outcome: Outcome
    version: int
    state: dict[str, Any]
    replayed: bool = False


def classify(previous: dict[str, Any] | None, fingerprint: str, run_id: str, seq: int) -> Classification:
    """Decide the outcome of item ``seq`` of run ``run_id`` given the key's previous table value."""
    if previous is not None:
        for recent_run, recent_seq, recent_outcome, recent_version in previous.get("recent", ()):
            if recent_run == run_id and recent_seq == seq:
                return Classification(recent_outcome, recent_version, previous, replayed=True)
    if previous is None:
        outcome: Outcome = "created"
        version = 1
    elif previous["fingerprint"] != fingerprint:
        outcome = "updated"
        version = int(previous["version"]) + 1
    else:
        outcome = "unchanged"
        version = int(previous["version"])
    recent = [[run_id, seq, outcome, version], *(previous or {}).get("recent", [])][:RECENT_KEPT]
    return Classification(outcome, version, {"fingerprint": fingerprint, "version": version, "recent": recent})


def rejected_event(change: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """What the sink sends to ``jobs.parsed`` (key: dedupeKey) when MongoDB rejected a posting's write.

    It reaches the dedupe agent on the table's own partition, the only place the entry may change.
    """
    return {
        "type": "rejected",
        "dedupeKey": change["job"]["dedupeKey"],
        "fingerprint": change["fingerprint"],
        "version": int(change["version"]),
        "runId": change["runId"],
        "seq": change["seq"],
        "reason": reason[:256],
    }


def forget_rejected(previous: dict[str, Any] | None, fingerprint: str) -> dict[str, Any] | None:
    """The table value after MongoDB rejected the write of ``fingerprint``; None when nothing changes.

    The fingerprint is dropped (the version kept), so the key's next sighting is ``updated`` with a
    higher version and is written again, instead of ``unchanged`` forever while MongoDB lacks it. If
    the entry moved on to another fingerprint meanwhile, that newer write decides and nothing changes.
    """
    if previous is None or previous.get("fingerprint") != fingerprint:
        return None
    return {**previous, "fingerprint": None}
