"""The corrections of streams/faust_internals.py on a real faust-streaming consumer (no broker needed)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from packaging.specifiers import SpecifierSet

from streams import faust_internals
from streams.app import create_app
from streams.settings import Settings

PARTITION = TP("jobstream.commands", 2)


@pytest.fixture
def consumer() -> Any:
    app = create_app(Settings.from_env({}))  # installs the corrections
    return app.consumer


def test_the_installed_faust_is_the_one_the_corrections_were_read_against() -> None:
    assert version("faust-streaming") in SpecifierSet(faust_internals.FAUST_VERSIONS)


def test_the_fetch_loop_never_sees_a_read_offset_so_it_drops_nothing(consumer: Any) -> None:
    """Faust's loop drops a record whose offset is below ``_read_offset[tp]``; it advanced that offset for
    records it did not deliver (flow suspended), and dropped them when the seek fetched them again."""
    assert isinstance(consumer._read_offset, faust_internals.NoReadGuard)
    consumer._read_offset[PARTITION] = 6  # what the loop writes after a record it held back
    get = consumer._read_offset.__getitem__  # what the loop binds when it starts
    assert get(PARTITION) is None and get(TP("other", 0)) is None
    consumer._read_offset.update({PARTITION: 4})  # perform_seek, seek and revoke keep working
    assert consumer._read_offset.pop(PARTITION) == 4


def offsets(consumer: Any, committed: int | None, acked: list[int]) -> int | None:
    consumer._committed_offset[PARTITION] = committed
    consumer._acked[PARTITION] = list(acked)
    consumer._acked_index[PARTITION] = set(acked)
    return consumer._new_offset(PARTITION)  # type: ignore[no-any-return]


def test_nothing_is_committed_while_the_message_at_the_committed_offset_is_unacked(consumer: Any) -> None:
    assert offsets(consumer, 4, [5, 6]) is None  # Faust as shipped: 7, past the unacked message 4
    assert offsets(consumer, 4, [4, 5, 6]) == 7
    assert offsets(consumer, 4, [4, 5, 7]) == 6  # a gap further on still stops the commit there
    assert offsets(consumer, None, [0, 1]) == 2  # nothing committed yet: from the first acked offset


def test_faust_as_shipped_commits_past_the_unacked_message() -> None:
    """Pins the behaviour the correction exists for: if Faust fixes it, this fails and the correction can go."""
    app = create_app(Settings.from_env({}))
    shipped = app.consumer
    shipped._committed_offset[PARTITION] = 4
    shipped._acked[PARTITION] = [5, 6]
    shipped._acked_index[PARTITION] = {5, 6}
    assert faust_internals._original_new_offset(shipped, PARTITION) == 7
    assert Consumer._new_offset is faust_internals._new_offset


class SeekingConsumer:
    """What ``_perform_seek`` uses of a consumer, recording the seeks it makes."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self._committed_offset = dict(committed)
        self.sought: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return {*self._committed_offset, TP("app-dedupe-changelog", 0)}

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return {tp: 3 for tp in partitions}  # the log starts at 3 (retention removed 0-2)

    async def _seek(self, tp: TP, offset: int) -> None:
        self.sought[tp] = offset


async def test_partitions_with_nothing_committed_are_sought_to_their_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka seeks only to positive committed offsets: records skipped during a rebalance on a partition
    with none were never read again (two of 16 commands requested as a worker joined never ran)."""
    async def faust_seek(_consumer: Any) -> None:  # Faust's own part: seeks the positive committed offsets
        return None

    monkeypatch.setattr(faust_internals, "_original_perform_seek", faust_seek)
    fresh, zero, used = TP("jobstream.commands", 0), TP("jobstream.commands", 1), TP("jobstream.commands", 2)
    consumer = SeekingConsumer({fresh: None, zero: 0, used: 17})
    await faust_internals._perform_seek(cast(Any, consumer))
    assert consumer.sought == {fresh: 3, zero: 3}  # not the one with a commit, not the changelog
    assert Consumer.perform_seek is faust_internals._perform_seek


def test_released_messages_are_no_longer_waited_for_and_never_committed(consumer: Any) -> None:
    """A stopping worker's wait_empty waited (until SIGKILL) for the commands its poller abandoned."""
    def message(topic: str, offset: int) -> Any:
        return type("Message", (), {"tp": TP(topic, 2), "topic": topic, "offset": offset, "acked": False})()

    held, other = message(PARTITION.topic, 4), message("jobstream.jobs.parsed", 9)
    consumer._unacked_messages.update({held, other})
    assert faust_internals.release(consumer, PARTITION.topic) == 1
    assert held not in consumer._unacked_messages and not held.acked
    assert other in consumer._unacked_messages, "other agents' messages are still theirs to ack"
    assert offsets(consumer, 4, []) is None  # nothing acked: nothing to commit


class WatchedConsumer(SeekingConsumer):
    """A consumer whose fetch position and held messages a test sets."""

    def __init__(self, committed: dict[TP, int | None], positions: dict[TP, int]) -> None:
        super().__init__(committed)
        self.positions = positions
        self._unacked_messages: set[Any] = set()
        self._acked: dict[TP, list[int]] = {}

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


async def test_a_partition_read_past_a_message_no_agent_received_is_read_again() -> None:
    skipped, busy, idle = TP("jobstream.commands", 0), TP("jobstream.commands", 1), TP("jobstream.commands", 2)
    consumer = WatchedConsumer({skipped: 4, busy: 7, idle: 9}, {skipped: 6, busy: 8, idle: 9})
    consumer._unacked_messages.add(type("Message", (), {"tp": busy, "offset": 7})())  # an agent holds it
    watch = faust_internals.SkippedWatch(patience=3)
    assert await watch.check(cast(Any, consumer)) == []
    assert await watch.check(cast(Any, consumer)) == []
    assert await watch.check(cast(Any, consumer)) == [skipped]
    assert consumer.sought == {skipped: 4}, "sought back to the committed offset; the held and the idle one left"


async def test_a_commit_that_moves_or_an_ack_resets_the_suspicion() -> None:
    tp = TP("jobstream.commands", 0)
    consumer = WatchedConsumer({tp: 4}, {tp: 6})
    watch = faust_internals.SkippedWatch(patience=2)
    assert await watch.check(cast(Any, consumer)) == []
    consumer._committed_offset[tp] = 5  # progress: the count starts again
    assert await watch.check(cast(Any, consumer)) == []
    consumer._acked[tp] = [5]  # acked, about to be committed
    assert await watch.check(cast(Any, consumer)) == []
    assert consumer.sought == {}


async def test_a_partition_revoked_while_a_timer_reads_its_position_is_skipped_not_a_crash() -> None:
    """aiokafka raises IllegalStateError for a partition revoked meanwhile; in a Faust timer that stopped the worker."""
    from aiokafka.errors import IllegalStateError

    class Revoked(WatchedConsumer):
        async def position(self, tp: TP) -> int:
            raise IllegalStateError(f"Partition {tp} is not assigned")

    tp = TP("jobstream.import.progress", 3)
    consumer = Revoked({tp: 4}, {})
    assert await faust_internals.position_or_none(consumer, tp) is None
    assert await faust_internals.SkippedWatch(patience=1).check(cast(Any, consumer)) == []


def test_install_refuses_a_faust_outside_the_range_read_and_tested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_internals, "version", lambda _name: "0.16.0")
    with pytest.raises(RuntimeError, match=r"faust-streaming 0\.16\.0 is installed"):
        faust_internals.install()


def test_the_private_parts_the_accessors_use_are_where_they_were_read(consumer: Any) -> None:
    """Each accessor's private part, as this faust-streaming has it (the behaviours are pinned by their own tests:
    test_batches, test_changelog_acks, test_dedupe's direct RocksDB read, and the corrections above)."""
    import faust  # noqa: PLC0415 - the test names faust's own classes
    from faust.streams import current_event  # noqa: PLC0415

    assert callable(faust.Stream.noack_take)  # batches: a take that does not ack
    assert callable(faust.Table.send_changelog)  # ChangelogAcks wraps it per table
    assert faust_internals.committed_offsets(consumer) is consumer._committed_offset
    consumer._committed_offset[PARTITION] = 9
    assert faust_internals.committed_offsets(consumer)[PARTITION] == 9
    event = cast(Any, type("Event", (), {"message": None})())
    faust_internals.set_current_event(event)
    assert current_event() is event  # the table's write path reads it here
    assert faust_internals.partition_db(type("Table", (), {"data": {}})(), 0) is None, "not RocksDB: no direct read"
