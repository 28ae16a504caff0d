"""The pipeline's agents, one module each, in the order a posting meets them: poller, dedupe, sink, stats."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from agents import dedupe, poller, scheduler, sink, stats
from streams.app import Pipeline
from streams.store import Store


def attach_all(pipeline: Pipeline, store: Store, session: Callable[[], aiohttp.ClientSession]) -> None:
    poller.attach(pipeline, store, session)
    dedupe.attach(pipeline)
    sink.attach(pipeline, store)
    stats.attach(pipeline, store)
    scheduler.attach(pipeline, store)
