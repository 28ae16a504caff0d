"""The pipeline's agents, one module each, in the order a posting meets them: poller, dedupe, sink, stats.

The agent modules are imported by :func:`attach_all`, not here, so that the parse process
(``python -m agents.parse_child``) imports only the parsing code, not faust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.parsing import ParserPool
    from streams.app import Pipeline
    from streams.store import Store


def attach_all(pipeline: Pipeline, store: Store, parsers: ParserPool) -> None:
    from agents import dedupe, poller, scheduler, sink, stats  # noqa: PLC0415 - see the module docstring

    poller.attach(pipeline, store, parsers)
    dedupe.attach(pipeline)
    sink.attach(pipeline, store)
    stats.attach(pipeline, store)
    scheduler.attach(pipeline, store)
