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

No rollback: the value also keeps ``at``, when the payload that made the current version was fetched
(``sourceAt`` of its envelope). A posting read from an *older* payload (a replay of a stored payload,
or a repair of an older run, after a newer run changed the key) whose content differs is
``unchanged`` and superseded: the newer version stays, nothing is written. The same payload again
(``at`` equal: a replay after a parser or mapping fix) or a newer one applies as usual. A value written
before ``at`` existed has none: its content was fetched before any payload that carries a time, so any
posting may change it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from models.runs import iso, parse_iso

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
    superseded: bool = False  # unchanged because a newer payload made the stored version (see the module docstring)


def older_than_stored(previous: Mapping[str, Any], seen_at: datetime | None) -> bool:
    """Whether a payload fetched at ``seen_at`` is older than the one that made the key's current version."""
    stored = previous.get("at")
    if seen_at is None or not stored:
        return False
    made = parse_iso(stored)
    return made is not None and seen_at < made


def classify(
    previous: Mapping[str, Any] | None, fingerprint: str, run_id: str, seq: int, position: Sequence[int],
    seen_at: datetime | None = None,
) -> Classification:
    """Decide the outcome of item ``seq`` of run ``run_id`` at ``position`` given the key's table value.

    ``seen_at`` is when the posting's payload was fetched: content older than the stored version's
    never replaces it (a replay of an older payload must not roll a posting back).
    """
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
        if older_than_stored(previous, seen_at):
            return Classification("unchanged", int(previous["version"]), None, superseded=True)
        outcome = "updated"
        version = int(previous["version"]) + 1
    else:
        return Classification("unchanged", int(previous["version"]), None)
    recent = [[run_id, seq, outcome, version], *(previous or {}).get("recent", [])][:RECENT_KEPT]
    state: dict[str, Any] = {"fingerprint": fingerprint, "version": version, "recent": recent, "pos": list(position)}
    stored_at = (previous or {}).get("at")
    if seen_at is not None:
        state["at"] = iso(seen_at)
    elif stored_at:
        state["at"] = stored_at
    return Classification(outcome, version, state)


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
