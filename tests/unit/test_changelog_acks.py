"""An agent acks its input only once its table writes' changelog records are in the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.app import create_pipeline
from streams.faust_internals import ChangelogAcks, set_current_event
from streams.settings import Settings


class Event:
    """The part of a Faust event a table write reads: the message's partition."""

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}
        self.message = type("Message", (), {"partition": 1, "topic": "t", "offset": 0})()


async def test_a_table_write_is_waited_for_until_its_changelog_record_is_delivered() -> None:
    pipeline = create_pipeline(Settings.from_env({"TABLE_STORE": "memory://"}))
    acks = ChangelogAcks(pipeline.dedupe_table)
    event = Event()
    set_current_event(event)  # type: ignore[arg-type]
    pipeline.dedupe_table["key-1"] = b'{"v":1}'
    (record,) = acks.pending
    assert record.message.partition == 1, "the record goes to the writing event's partition"

    waiting = asyncio.ensure_future(acks.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done(), "an ack must wait for the broker's answer to the changelog record"
    record.set_result(None)  # the broker acknowledged it
    await asyncio.wait_for(waiting, 1)
    assert acks.pending == []
    await acks.wait()  # nothing written since: returns at once
