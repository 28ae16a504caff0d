"""Every use jobstream makes of faust-streaming's private parts, in one place, each with why.

Pinned to the faust-streaming versions in ``FAUST_VERSIONS`` (setup.cfg requires the same range;
``install`` refuses any other, and ``tests/unit/test_faust_internals.py`` pins each behaviour relied
on here, so an upgrade that changes one fails there first, not in a rebalance).

**Accessors** (Faust has no public way to do these):
- ``set_current_event`` (``faust.streams._current_event``): a table write's partition is the current
  event's; a batch writes keys of many events.
- ``batches`` (``Stream.noack_take``, ``Stream.channel``): batches that stay unacked until the agent's
  work is safe; ``take()`` acks in a ``finally`` (FAUST-NOTES.md).
- ``ChangelogAcks`` (``Table.send_changelog``): an agent acks its input only once the table's
  changelog records of it are in the broker.
- ``committed_offsets`` (``Consumer._committed_offset``): consumer lag and the checks below.
- ``partition_db`` (the RocksDB store's ``_db_for_partition``): the dedupe agent reads one
  partition's database directly (Faust's read path cost more than the read).
- ``release`` (``Consumer._unacked_messages``): a stopping poller hands back commands it abandons.

**Corrections** of the consumer that keep a rebalance from losing messages, each found by
``deploy/chaos.py --rebalance`` with ``DEVLOG=1`` (mode's developer log): after a worker was
killed, stopped or joined while runs were requested, commands that no worker ever ran were logged
as ``DROPPED MESSAGE ROFF 4`` by the worker that took their partition over, and the group's
committed offset later moved past them.

1. **The read-offset guard drops messages it never delivered.** Faust's fetch loop skips a record
   whose offset is below the partition's "read offset", to hide records it already handed to the
   agents. But it advances that offset for records it *does not* hand over (the flow is suspended
   during a rebalance, between the partitions' resume and the seek to their committed offsets), so
   once the seek fetches them again they are below it and dropped. Nothing acks them: the run sat
   ``pending`` until RUN_TIMEOUT_SECONDS failed it, and postings waited for a repair. With the guard
   off, a record fetched twice across a seek can reach an agent twice; every agent is idempotent
   under redelivery (the dedupe table and the runs table recognise (runId, seq), the sink upserts by
   ``_id``), and Faust acks an offset once.

2. **The commit may pass the message at the committed offset.** ``Consumer._new_offset`` refuses to
   commit past a gap at the head of the acked offsets only when the first acked offset is *two* or
   more beyond the committed one; but Kafka's committed offset is the next message to read, so acked
   ``[5, 6]`` over committed ``4`` committed 7 while message 4 was still unacked (held by an agent,
   or dropped as above). It must not commit until the message at the committed offset itself is acked.

3. **A partition with nothing committed is not sought back.** A record taken from an agent's queue
   while the flow is suspended, or from an older group generation, is skipped unacked: it is to be
   read again from the committed offset when the rebalance seeks there. But aiokafka seeks only to
   positive committed offsets, so a partition with none yet (offset 0 or nothing: the first minutes
   of a topic) kept its fetch position past the skipped records, and nothing read them again: two of
   16 commands requested as a worker joined never ran. Such partitions are now sought to their
   earliest offset, where the group starts anyway (``auto_offset_reset=earliest``). Changelogs are
   left alone (recovery positions them).

**Settings** Faust does not expose:
- ``_idempotent_settings`` (``faust.transport.drivers.aiokafka.Producer._settings_extra``): Faust's
  producers are idempotent (``enable_idempotence``, with ``acks=all``), as the API's and the CLI's
  are (``streams.commands.producer_for``): a retried send after a lost acknowledgement is not
  written twice. faust-streaming 0.15 turns idempotence on only inside its transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.streams import _current_event
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
from faust.types import EventT, StreamT
from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)

FAUST_VERSIONS = ">=0.15,<0.16"  # the range this module was read and tested against (setup.cfg requires the same)


# --- accessors --------------------------------------------------------------------------------

def set_current_event(event: EventT[Any]) -> None:
    """Make ``event`` the one a table write belongs to.

    Faust decides a table key's changelog partition (and its RocksDB partition) from the current
    event. Inside a batch from ``noack_take`` the current event is the batch's last one, which is
    the wrong partition for every other key; each write therefore names its own event first.
    """
    _current_event.set(weakref.ref(event))


LINGER_SECONDS = 0.05


async def batches(stream: StreamT[Any], size: int, within: float, linger: float = LINGER_SECONDS) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of at most ``size`` events that are *not* acked: the agent acks them after its work is safe.

    A batch closes when it is full, ``within`` seconds after its first event, or when no further
    event waits in the agent's queue as a ``linger``-second take returns. So a backlog still makes
    full batches, while a lone small feed does not wait out a whole window at every stage
    (Faust's take alone waits its whole timeout for a batch that is not full).
    (``stream.take()`` acks in a ``finally``, even when the body failed: see FAUST-NOTES.md;
    ``noack_take`` runs no background read that could ack, and events carried from one of its
    chunks to the next batch stay unacked until the agent acks them.)
    """
    pending: list[EventT[Any]] = []
    opened = 0.0
    async for chunk in stream.noack_take(size, within=min(linger, within)):  # type: ignore[attr-defined]
        if not pending:
            opened = time.monotonic()
        pending.extend(chunk)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
            opened = time.monotonic()
        if pending and (time.monotonic() - opened >= within or not waiting(stream)):
            yield pending
            pending = []


def waiting(stream: StreamT[Any]) -> bool:
    """Whether events are queued for this agent already (fetched from Kafka, not yet taken)."""
    try:
        return not stream.channel.empty()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # no queue yet: nothing waits
        return False


class ChangelogAcks:
    """The changelog records a table sent since the last ``wait``, so an agent acks its input only after them.

    Faust sends a table write's changelog record in the background and does not tie it to the event.
    The dedupe agent acked an envelope once its upserts and outcomes were in the broker; killed a moment
    later, the worker had not delivered the table's changelog records, and the partition's next owner
    recovered a table without them: 4 of 1,771 unchanged postings of the next run were called new or
    updated (chaos --rebalance, join-then-kill). An agent awaits ``wait()`` before it acks.
    """

    def __init__(self, table: Any) -> None:
        self.pending: list[Awaitable[Any]] = []
        send = table.send_changelog

        def send_changelog(*args: Any, **kwargs: Any) -> Any:
            future = send(*args, **kwargs)
            self.pending.append(future)
            return future

        table.send_changelog = send_changelog  # Table.on_key_set and on_key_del call it for every write

    async def wait(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)


def committed_offsets(consumer: Any) -> dict[Any, int | None]:
    """The offsets this worker committed, by partition (``Consumer._committed_offset``; no public accessor)."""
    committed: dict[Any, int | None] = getattr(consumer, "_committed_offset", {})
    return committed


def partition_db(table: Any, partition: int) -> Any | None:
    """The RocksDB database of one table partition, or None on any other store (e.g. ``memory://`` in tests)."""
    open_db: Callable[[int], Any] | None = getattr(table.data, "_db_for_partition", None)
    return None if open_db is None else open_db(partition)


# --- corrections ------------------------------------------------------------------------------



class NoReadGuard(dict[Any, Any]):
    """``Consumer._read_offset`` that never makes the fetch loop drop a record (correction 1).

    The loop reads it through ``__getitem__`` (bound once at its start); ``None`` there means "no
    guard" to Faust. Writes are kept, so ``perform_seek``, ``seek`` and the revoke's ``pop`` work as before.
    """

    def __getitem__(self, key: Any) -> None:
        return None


_original_new_offset = Consumer._new_offset
_original_init = Consumer.__init__


def _new_offset(self: Consumer, tp: Any) -> int | None:
    """Faust's ``_new_offset``, except that nothing is committed while the message at the committed offset is unacked."""
    acked = self._acked[tp]
    committed = self._committed_offset[tp]
    if acked and committed is not None and not self._gap[tp] and min(acked) > committed:
        return None
    result: int | None = _original_new_offset(self, tp)
    return result


def _init(self: Consumer, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self._read_offset = NoReadGuard()


_original_perform_seek = Consumer.perform_seek


def stream_partitions(consumer: Any) -> list[Any]:
    """Assigned partitions the agents read (not table changelogs), in a stable order."""
    return sorted((tp for tp in consumer.assignment() if not consumer._is_changelog_tp(tp)),
                  key=lambda tp: (tp.topic, tp.partition))


def unsought(consumer: Any) -> list[Any]:
    """Stream partitions that ``perform_seek`` left where they were: nothing (or 0) committed."""
    return [tp for tp in stream_partitions(consumer) if not consumer._committed_offset.get(tp)]


async def _perform_seek(self: Consumer) -> None:
    """Faust's seek to the committed offsets, then the partitions with none to their earliest offset (correction 3)."""
    await _original_perform_seek(self)
    partitions = unsought(self)
    if partitions:
        earliest = await self.earliest_offsets(*partitions)
        for tp in partitions:
            await self._seek(tp, earliest[tp])


def release(consumer: Any, topic: str) -> int:
    """Hand every unacked message of ``topic`` back: Faust stops waiting for them, their offsets stay uncommitted.

    A stopping worker waits (``wait_empty``) for every message an agent has taken to be acked. The
    poller, once it abandons its runs to the partitions' next owner, acks nothing more, and the
    commands it held (in its batch, or taken into its stream's buffer) kept the stop waiting until
    SIGKILL. Faust has no public way to give a message back, so they leave the consumer's unacked
    set; returns how many did.
    """
    held = [message for message in list(consumer._unacked_messages) if message.topic == topic and not message.acked]
    for message in held:
        consumer._unacked_messages.discard(message)
    return len(held)


async def position_or_none(consumer: Any, tp: Any) -> int | None:
    """The consumer's position in ``tp``, or None once a rebalance took the partition away meanwhile.

    Timers read positions while the group may change under them; aiokafka raises IllegalStateError
    for a partition revoked since, and an exception in a Faust timer stops the worker (chaos
    --rebalance: a worker crashed in the lag timer as the other was killed).
    """
    try:
        position: int | None = await consumer.position(tp)
    except IllegalStateError:
        return None
    return position


class SkippedWatch:
    """Finds partitions whose reading went past a message that no agent holds or acked, and reads them again.

    The last safety net of the three corrections above: a record Faust took and then neither
    delivered nor sought back to (a skip at a rebalance edge) leaves its partition's commit stuck
    at its offset, and the run waits for a repair (up to 4 x REPAIR_AFTER_SECONDS while the stuck
    commit looks like a backlog). Here a partition is sought back to its committed offset once, for
    ``patience`` checks in a row, the consumer's position is past that offset, the commit has not
    moved, and the message at it is neither held (taken by an agent, not yet acked) nor acked. A
    record that merely waits in an agent's queue that long is read twice, which every agent takes.
    """

    def __init__(self, patience: int = 3) -> None:
        self.patience = patience
        self.suspects: dict[Any, tuple[int, int]] = {}  # tp -> (committed offset, checks in a row)

    async def check(self, consumer: Any) -> list[Any]:
        """One check (a worker timer runs it every few seconds); returns the partitions sought back."""
        held = {(message.tp, message.offset) for message in list(consumer._unacked_messages)}
        sought = []
        suspects: dict[Any, tuple[int, int]] = {}
        for tp in stream_partitions(consumer):
            committed = consumer._committed_offset.get(tp)
            if committed is None or (tp, committed) in held or committed in consumer._acked.get(tp, ()):
                continue
            position = await position_or_none(consumer, tp)
            if position is None or position <= committed:
                continue
            before, count = self.suspects.get(tp, (committed, 0))
            count = count + 1 if before == committed else 1
            if count >= self.patience:
                logger.warning("partition %s-%d was read past offset %d, which no agent received: reading it again "
                               "(position %d)", tp.topic, tp.partition, committed, position)
                await consumer._seek(tp, committed)
                sought.append(tp)
            else:
                suspects[tp] = (committed, count)
        self.suspects = suspects
        return sought


IDEMPOTENT_PRODUCER = {"acks": "all", "enable_idempotence": True}


def _idempotent_settings(self: AIOKafkaFaustProducer) -> dict[str, Any]:
    """Every aiokafka producer Faust makes (``_new_producer`` merges these last): idempotent, acks=all."""
    return dict(IDEMPOTENT_PRODUCER)


def install() -> None:
    """Apply the corrections to every Faust consumer (idempotent; ``create_app`` calls it before the app's consumer exists).

    Refuses a faust-streaming outside ``FAUST_VERSIONS``: the private parts above may have changed there.
    """
    installed = version("faust-streaming")
    if installed not in SpecifierSet(FAUST_VERSIONS):
        raise RuntimeError(f"faust-streaming {installed} is installed; jobstream's use of its internals "
                           f"(streams/faust_internals.py) was read and tested against {FAUST_VERSIONS}")
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer.__init__ = _init  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    AIOKafkaFaustProducer._settings_extra = _idempotent_settings  # type: ignore[method-assign]
