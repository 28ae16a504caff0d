"""Import runs: the progress events that describe them and the pure fold that turns those into counters.

A run's state lives in the stats table (keyed by runId). Every item of a run has a sequence number
(its index in the feed); the state keeps a bitmap of the sequence numbers already accounted for,
so a progress event delivered twice is counted once. A run is finished when the poller announced
how many items the feed held and every one of them has an outcome.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

STATUSES = ("pending", "running", "completed", "partial", "failed")
FINISHED = frozenset({"completed", "partial", "failed"})
TRIGGERS = ("schedule", "manual", "cli")
OUTCOME_FIELDS = {
    "created": "newJobs",
    "updated": "updatedJobs",
    "unchanged": "unchangedJobs",
    "failed": "failedJobs",
}


def new_run_id(now: datetime) -> str:
    """Sortable by time, unique across processes."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def run_request(source_url: str, source_name: str, trigger: str, now: datetime, run_id: str | None = None) -> dict[str, Any]:
    """The ``commands`` value that asks the poller to import one feed once."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    return {
        "runId": run_id or new_run_id(now),
        "sourceUrl": source_url,
        "sourceName": source_name,
        "trigger": trigger,
        "requestedAt": iso(now),
    }


def requested_event(command: Mapping[str, Any]) -> dict[str, Any]:
    """The progress event that makes a requested run visible as ``pending`` before the poller starts."""
    return {"type": "requested", "at": command["requestedAt"], **command}


def outcomes_event(run_id: str, items: list[dict[str, Any]], at: str, *, batch: bool = False) -> dict[str, Any]:
    """Outcomes of some of a run's items: ``{"seq", "outcome"}`` plus ``key``/``reason``/``stage`` when failed."""
    return {"type": "outcomes", "runId": run_id, "at": at, "items": items, "batch": batch}


# --- the fold ----------------------------------------------------------------------------------


def empty_run(run_id: str) -> dict[str, Any]:
    return {
        "runId": run_id,
        "sourceUrl": "",
        "sourceName": "",
        "trigger": "manual",
        "status": "pending",
        "requestedAt": None,
        "startedAt": None,
        "finishedAt": None,
        "durationMs": None,
        "totalFetched": 0,
        "announced": False,
        "newJobs": 0,
        "updatedJobs": 0,
        "unchangedJobs": 0,
        "failedJobs": 0,
        "failures": [],
        "failuresTruncated": False,
        "error": None,
        "meta": {"batches": 0},
        "lastProgressAt": None,
        "seen": "",
    }


def fold(state: dict[str, Any] | None, event: Mapping[str, Any], max_failures_kept: int) -> dict[str, Any]:
    """Apply one progress event to a run's state and return the new state (the input is not changed)."""
    run = dict(state) if state is not None else empty_run(str(event["runId"]))
    run["meta"] = dict(run["meta"])
    run["failures"] = list(run["failures"])
    kind = event["type"]
    if run["status"] in FINISHED:
        return run  # late or replayed events never reopen a finished run
    run["lastProgressAt"] = event["at"]
    if kind in ("requested", "started"):
        for key in ("sourceUrl", "sourceName", "trigger", "requestedAt"):
            if event.get(key):
                run[key] = event[key]
        if kind == "started":
            run["status"] = "running"
            run["startedAt"] = run["startedAt"] or event["at"]
    elif kind == "fetched":
        if not run["announced"]:
            run["announced"] = True
            run["totalFetched"] = int(event["totalFetched"])
            run["meta"].update(event.get("meta", {}))
            _account(run, [(f["seq"], "failed", f) for f in event.get("failures", [])], max_failures_kept)
    elif kind == "outcomes":
        added = _account(run, [(item["seq"], item["outcome"], item) for item in event["items"]], max_failures_kept)
        if added and event.get("batch"):
            run["meta"]["batches"] = int(run["meta"].get("batches", 0)) + 1
    elif kind == "failed":
        run["meta"].update(event.get("meta", {}))
        run["error"] = str(event["error"])
        return _finish(run, "failed", event["at"])
    elif kind == "timeout":
        accounted = _accounted(run)
        run["error"] = f"run timed out after {event.get('afterSeconds', '?')}s: " + (
            f"{accounted} of {run['totalFetched']} items accounted" if run["announced"] else "the feed was never fetched"
        )
        run["failedJobs"] += max(run["totalFetched"] - accounted, 0)
        return _finish(run, "failed", event["at"])
    else:
        raise ValueError(f"unknown progress event type {kind!r}")
    if run["startedAt"] is None and kind != "requested":
        run["startedAt"] = event["at"]
    if run["announced"] and _accounted(run) >= run["totalFetched"]:
        return _finish(run, "partial" if run["failedJobs"] else "completed", event["at"])
    if kind != "requested" and run["status"] == "pending":
        run["status"] = "running"
    return run


def _account(run: dict[str, Any], items: Iterable[tuple[int, str, Mapping[str, Any]]], max_failures_kept: int) -> int:
    """Count each sequence number once; return how many were new."""
    seen = bytearray(base64.b64decode(run["seen"]))
    added = 0
    for seq, outcome, item in items:
        byte, bit = divmod(int(seq), 8)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen)))
        if seen[byte] & (1 << bit):
            continue
        seen[byte] |= 1 << bit
        added += 1
        run[OUTCOME_FIELDS[outcome]] += 1
        if outcome == "failed":
            if len(run["failures"]) < max_failures_kept:
                run["failures"].append(
                    {"key": str(item.get("key", f"item[{seq}]")), "reason": str(item.get("reason", "")),
                     "stage": str(item.get("stage", ""))}
                )
            else:
                run["failuresTruncated"] = True
    run["seen"] = base64.b64encode(bytes(seen)).decode()
    return added


def missing_seqs(run: Mapping[str, Any], limit: int) -> list[int]:
    """Sequence numbers of an announced run that have no outcome yet (at most ``limit``)."""
    seen = base64.b64decode(run["seen"])
    missing: list[int] = []
    for seq in range(int(run["totalFetched"])):
        byte, bit = divmod(seq, 8)
        if byte >= len(seen) or not seen[byte] & (1 << bit):
            missing.append(seq)
            if len(missing) >= limit:
                break
    return missing


def needs_repair(run: Mapping[str, Any], now: datetime, after_seconds: float) -> bool:
    """A running, announced run that has heard nothing for ``after_seconds``: some outcome was lost."""
    if run["status"] in FINISHED or not run["announced"]:
        return False
    last = parse_iso(run.get("lastProgressAt"))
    return last is not None and (now - last).total_seconds() >= after_seconds


def _accounted(run: Mapping[str, Any]) -> int:
    return sum(int(run[field]) for field in OUTCOME_FIELDS.values())


def _finish(run: dict[str, Any], status: str, at: str) -> dict[str, Any]:
    run["status"] = status
    run["finishedAt"] = at
    started = parse_iso(run["startedAt"] or run["requestedAt"] or at)
    finished = parse_iso(at)
    assert started is not None and finished is not None  # noqa: S101 - both set just above
    run["startedAt"] = run["startedAt"] or at
    run["durationMs"] = max(0, round((finished - started).total_seconds() * 1000))
    return run


def snapshot(run: Mapping[str, Any]) -> dict[str, Any]:
    """The ``import_logs`` document (SPEC §3) of a run state, with JSON-friendly ISO timestamps."""
    doc = {key: value for key, value in run.items() if key not in ("seen", "announced")}
    doc["fileName"] = run["sourceUrl"]
    doc["totalImported"] = int(run["newJobs"]) + int(run["updatedJobs"])
    return doc


def as_mongo(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot with its timestamps as datetimes, as stored in MongoDB."""
    stored = dict(doc)
    for key in ("requestedAt", "startedAt", "finishedAt"):
        stored[key] = parse_iso(stored.get(key))
    return stored
