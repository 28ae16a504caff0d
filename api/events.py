"""Fan-out of import-log snapshots to SSE clients, with a replay window for ``Last-Event-ID`` resume.

One ``LogHub`` per API process. Each event gets the id ``<boot>-<seq>``: ``seq`` counts up within
the process, ``boot`` is random per process, so an id from another instance or from before a
restart is recognised as foreign instead of being misread as a position in this process's history.
The last ``ring_size`` events are kept; a client resuming inside that window gets exactly the events
it missed, one resuming outside it gets a ``resync`` event (reload the list over REST) instead.
Each client has a bounded queue: a client that cannot keep up is dropped, it does not grow memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)
MAX_SEQ_DIGITS = 18  # far beyond any count of events one process publishes


@dataclass(frozen=True, slots=True)
class LogEvent:
    seq: int
    id: str
    run_id: str
    data: str  # the snapshot as compact JSON


@dataclass(frozen=True, slots=True)
class Replay:
    """What a (re)connecting client is owed: the events it missed, or a resync when they are unknown."""

    events: list[LogEvent]
    resync: bool


class Subscription:
    """One client's bounded queue; ``on_drop`` ends its stream when it falls too far behind."""

    def __init__(self, maxsize: int, on_drop: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[LogEvent] = asyncio.Queue(maxsize)
        self.on_drop = on_drop
        self.dropped = False


class StreamSlots:
    """At most ``limit`` SSE streams open at once (MAX_SSE_CLIENTS): each holds a socket, a task and a queue for hours.

    A slot is taken before the response starts (no await between the check and the count), so a burst
    of connections cannot all pass the check at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open = max(0, self.open - 1)


class LogHub:
    def __init__(self, ring_size: int = 1000, queue_size: int = 256, boot: str | None = None,
                 on_dropped: Callable[[], None] | None = None) -> None:
        self.boot = boot or secrets.token_hex(4)
        self.seq = 0
        self.queue_size = queue_size
        self.ring: deque[LogEvent] = deque(maxlen=ring_size)
        self.subscribers: set[Subscription] = set()
        self._on_dropped = on_dropped

    @property
    def last_id(self) -> str:
        return f"{self.boot}-{self.seq}"

    def publish(self, snapshot: Mapping[str, Any]) -> LogEvent:
        self.seq += 1
        event = LogEvent(self.seq, f"{self.boot}-{self.seq}", str(snapshot.get("runId", "")),
                         json.dumps(snapshot, separators=(",", ":"), default=str))
        self.ring.append(event)
        for subscription in list(self.subscribers):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(subscription)
        return event

    def subscribe(self, last_event_id: str | None, on_drop: Callable[[], None]) -> tuple[Subscription, Replay]:
        """Register a client and compute its replay in one step, so no event falls in between."""
        subscription = Subscription(self.queue_size, on_drop)
        self.subscribers.add(subscription)
        return subscription, self.replay_after(last_event_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    def replay_after(self, last_event_id: str | None) -> Replay:
        if last_event_id is None or not last_event_id.strip():
            return Replay([], resync=False)  # a fresh client reads the current state over REST
        seq = self._own_seq(last_event_id.strip())
        oldest = self.ring[0].seq if self.ring else self.seq + 1
        if seq is None or seq > self.seq or seq < oldest - 1:
            return Replay([], resync=True)
        return Replay([event for event in self.ring if event.seq > seq], resync=False)

    def _own_seq(self, event_id: str) -> int | None:
        boot, _, seq = event_id.rpartition("-")
        # ASCII digits only, and few: "²" is a digit int() refuses, 5,000 digits exceed its limit (both were a 500).
        if boot != self.boot or not (seq.isascii() and seq.isdigit()) or len(seq) > MAX_SEQ_DIGITS:
            return None
        return int(seq)

    def _drop(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        subscription.dropped = True
        logger.warning("SSE client dropped: %d events queued, it does not keep up", subscription.queue.qsize())
        if self._on_dropped is not None:
            self._on_dropped()
        subscription.on_drop()


def snapshot_from(value: bytes | None) -> dict[str, Any] | None:
    """An ``import.logs`` record value → the snapshot; None for tombstones and malformed records."""
    if value is None:
        return None
    try:
        snapshot = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        logger.warning("import.logs record is not JSON; skipped (%d bytes)", len(value))
        return None
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("runId"), str):
        logger.warning("import.logs record has no runId; skipped")
        return None
    return snapshot
