"""What an agent receives: its topic's raw messages decoded into their model, the bad ones sent to ``jobs.dlq``.

The agents subscribe to their topics as raw bytes (``streams.app.Pipeline.source``), so Faust never
decodes a value: a value Faust could not decode was thrown into the agent's stream, crashed the agent
with the rest of its batch unacked, and every restart met it again. Here a message that does not
decode into its topic's model (``models/messages.py``) becomes one ``jobs.dlq`` record
(``stage: "decode"``, its topic, partition, offset and clipped bytes), one log line and one count of
``jobstream_messages_refused_total``; it is acknowledged with the rest of its batch by the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faust.types import EventT, TopicT

from agents.metrics import MESSAGES_REFUSED
from models.messages import BadMessage, dlq_record

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Received(Generic[T]):
    """A decoded message with the Faust event it came in (for its offset, its partition and the ack)."""

    value: T
    event: EventT[Any]

    @property
    def message(self) -> Any:
        return self.event.message


@dataclass
class Inbox(Generic[T]):
    """Decodes one topic's messages for its agent; ``decode`` raises BadMessage for what it refuses."""

    decode: Callable[[bytes, int], T]
    dlq: TopicT
    max_items: int

    async def open(self, events: Sequence[EventT[Any]]) -> list[Received[T]]:
        """The batch's good messages, in order; the bad ones are in ``jobs.dlq`` when this returns."""
        good: list[Received[T]] = []
        refused: list[Any] = []
        for event in events:
            try:
                good.append(Received(self.decode(event.value or b"", self.max_items), event))
            except BadMessage as exc:
                refused.append(await self.refuse(event, str(exc) or "empty value"))
        if refused:
            await asyncio.gather(*refused)
        return good

    async def refuse(self, event: EventT[Any], reason: str) -> Any:
        message = event.message
        logger.warning("message refused, sent to jobs.dlq topic=%s partition=%s offset=%s bytes=%d reason=%s",
                       message.topic, message.partition, message.offset, len(event.value or b""), reason[:300])
        MESSAGES_REFUSED.labels(topic=message.topic).inc()
        record = dlq_record(reason, message.topic, message.partition, message.offset, event.value)
        return await self.dlq.send(key=message.key, value=record)
