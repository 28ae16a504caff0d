"""Classify a posting as created / updated / unchanged from the dedupe table's memory of its key.

The table value remembers, besides fingerprint and version, the last few ``(runId, seq)`` that
touched the key and the outcome each got. A replayed event (at-least-once delivery after a crash)
is recognised and given its original outcome instead of being re-classified as ``unchanged``,
which is what keeps the counts exact without Kafka transactions.
"""

from __future__ import annotations

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
