"""Classify a posting as created / updated / unchanged from the dedupe table's memory of its key.

The table value is written only when the key changes (created, updated, or a fingerprint MongoDB
rejected is forgotten): an unchanged posting costs a read and nothing else. The value remembers the
fingerprint and version, the last few changes (``runId``, ``seq``, outcome, version), and ``pos``,
the position of the last change in ``jobs.parsed`` (the envelope's offset in the key's partition
and the posting's index in the envelope). A redelivered envelope (at-least-once after a crash) is
recognised without Kafka transactions: a posting recorded among the changes gets its original
outcome again; a posting at or before ``pos`` that is not recorded was processed already and changed
nothing, so it is ``unchanged`` again. Every key lives in one partition (see ``models.envelopes``),
so positions of one key are comparable.

Known limit: a *republished* posting (a repair or a replayed run command, which get new offsets)
whose run is older than a later change of the same key, and which was not itself a change, is
classified against the later state. Runs of one feed do not overlap (a busy feed is skipped), so
this needs a repair of a run after a newer run of the same feed changed the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["created", "updated", "unchanged"]
RECENT_KEPT = 8
NOWHERE = [-1, -1]


@dataclass(frozen=True, slots=True)
class Classification:
    """What the dedupe agent does with one posting; ``state`` is the table value to write, None for no write."""

    outcome: Outcome
    version: int
    state: dict[str, Any] | None
    replayed: bool = False


def classify(
    previous: Mapping[str, Any] | None, fingerprint: str, run_id: str, seq: int, position: Sequence[int]
) -> Classification:
    """Decide the outcome of item ``seq`` of run ``run_id`` at ``position`` given the key's table value."""
    if previous is not None:
        for recent_run, recent_seq, recent_outcome, recent_version in previous.get("recent", ()):
            if recent_run == run_id and recent_seq == seq:
                return Classification(recent_outcome, recent_version, None, replayed=True)
        if list(position) <= list(previous.get("pos") or NOWHERE):
            return Classification("unchanged", int(previous["version"]), None, replayed=True)
    if previous is None:
        outcome: Outcome = "created"
        version = 1
    elif previous["fingerprint"] != fingerprint:
        outcome = "updated"
        version = int(previous["version"]) + 1
    else:
        return Classification("unchanged", int(previous["version"]), None)
    recent = [[run_id, seq, outcome, version], *(previous or {}).get("recent", [])][:RECENT_KEPT]
    return Classification(outcome, version, {"fingerprint": fingerprint, "version": version, "recent": recent,
                                             "pos": list(position)})


def rejected_event(change: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """What the sink sends to ``jobs.parsed`` (the key's partition) when MongoDB rejected a posting's write.

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


def forget_rejected(previous: Mapping[str, Any] | None, fingerprint: str, version: int | None = None) -> dict[str, Any] | None:
    """The table value after MongoDB rejected the write of ``fingerprint`` (at ``version``); None when nothing changes.

    The fingerprint is dropped (the version kept), so the key's next sighting is ``updated`` with a
    higher version and is written again, instead of ``unchanged`` forever while MongoDB lacks it. If
    the entry moved on since (another fingerprint, or the same one written again at a later version,
    e.g. when this event is redelivered after that write), that newer write decides and nothing changes.
    """
    if previous is None or previous.get("fingerprint") != fingerprint:
        return None
    if version is not None and int(previous.get("version", version)) != version:
        return None
    return {**previous, "fingerprint": None}
