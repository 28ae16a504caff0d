"""Replay of a stored payload (SPEC §5 ``POST /api/import/replay``): which run's payload, or why there is none.

Pure: the API reads the run's ``import_logs`` row and whether ``raw_feeds`` holds its payload, and asks here.
What a replay may change is decided per posting by the dedupe agent (``models/dedupe.py``): a posting
read from a payload older than the one that made its stored version is left as stored (``unchanged``),
so replaying an older payload never rolls a newer version back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

# raw_feeds keeps a payload only when it compresses to at most this (agents/poller.py MAX_RAW_STORED).
RAW_STORED_LIMIT = 15 * 1024 * 1024


def replayed_run(run: Mapping[str, Any]) -> str:
    """The run whose payload a replay of ``run`` parses: a replay run's is the one it replayed."""
    meta = run.get("meta") or {}
    return str(meta.get("replayOf") or run["runId"])


def missing_payload_reason(run: Mapping[str, Any], now: datetime, retention_days: float) -> str:
    """Why ``raw_feeds`` holds no payload for ``run`` (its import_logs row): the 409's message."""
    run_id = replayed_run(run)
    meta = run.get("meta") or {}
    requested = run.get("requestedAt") or run.get("startedAt")
    if meta.get("notModified"):
        return f"run {run_id} fetched no payload (the feed answered 304 Not Modified): replay the run that fetched it"
    if not meta.get("bytes") and run.get("status") == "failed":
        return f"run {run_id} fetched no payload (it failed: {run.get('error') or 'unknown error'})"
    if isinstance(requested, datetime) and requested < now - timedelta(days=retention_days):
        return (f"the payload of run {run_id} has expired: raw_feeds keeps payloads "
                f"RAW_FEED_RETENTION_DAYS={retention_days:g} days")
    if int(meta.get("bytes") or 0) > RAW_STORED_LIMIT:
        return (f"the payload of run {run_id} was never stored: {int(meta['bytes']):,} bytes, too large for raw_feeds "
                f"once compressed (over {RAW_STORED_LIMIT:,} bytes)")
    return (f"the payload of run {run_id} is no longer stored (expired or removed; raw_feeds keeps payloads "
            f"RAW_FEED_RETENTION_DAYS={retention_days:g} days and none over {RAW_STORED_LIMIT:,} bytes compressed)")
