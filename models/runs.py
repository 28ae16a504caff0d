"""Import runs: the progress events that describe them and the pure fold that turns those into counters.

A run's state lives in the stats table (keyed by runId). Every item of a run has a sequence number
(its index in the feed); the state keeps a bitmap of the sequence numbers already accounted for,
so a progress event delivered twice is counted once. A run is finished when the poller announced
how many items the feed held and every one of them has an outcome.

Outcomes may arrive before the announcement (the poller publishes while it parses). Until then the
state also keeps one bitmap per outcome (``pre``), so that at the announcement the outcomes of
sequence numbers the feed does not hold (``seq >= totalFetched``: a replayed command that fetched a
changed feed) can be taken back out of the counters. After it, such numbers are ignored. A run that
ends early (``failed``, ``timeout``) counts every item without an outcome as failed, so the SPEC §3
invariant ``totalFetched == newJobs + updatedJobs + unchangedJobs + failedJobs`` always holds.
"""

from __future__ import annotations

import base64
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

STATUSES = ("pending", "running", "completed", "partial", "failed")
FINISHED = frozenset({"completed", "partial", "failed"})
TRIGGERS = ("schedule", "manual", "cli", "replay")
# Failure text is clipped so that neither the runs table nor an event can grow with hostile input.
MAX_FAILURE_TEXT = 256
MAX_ERROR_TEXT = 1024
# Fields of an import_logs row that a ``timeout`` event carries, for a run the runs table does not know.
ROW_FIELDS = ("sourceUrl", "sourceName", "trigger", "requestedAt", "startedAt", "totalFetched",
              "newJobs", "updatedJobs", "unchangedJobs", "failedJobs", "failures", "failuresTruncated", "meta")
OUTCOME_FIELDS = {
    "created": "newJobs",
    "updated": "updatedJobs",
    "unchanged": "unchangedJobs",
    "failed": "failedJobs",
}


def new_run_id(now: datetime) -> str:
    """Sortable by time, unique across processes."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def utc_now() -> datetime:
    """The agents' default clock (a field of each step, so tests can pass their own)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def run_request(
    source_url: str, source_name: str, trigger: str, now: datetime, run_id: str | None = None, replay_of: str | None = None,
    feed_format: str = "auto", mapping: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``commands`` value that asks the poller to import one feed once.

    ``replay_of`` (trigger ``replay`` only) names the run whose stored payload the poller parses
    instead of fetching the feed (``agents/poller.py``). The command carries the feed's ``format`` and
    ``mapping`` (SPEC §3a) as the registry held them when the run was requested, so every delivery of the
    command parses the payload the same way (a replay: with the feed's current ones).
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    if (trigger == "replay") != (replay_of is not None):
        raise ValueError("a replay run names the run it replays (replay_of), and only a replay run does")
    command: dict[str, Any] = {
        "runId": run_id or new_run_id(now),
        "sourceUrl": source_url,
        "sourceName": source_name,
        "trigger": trigger,
        "requestedAt": iso(now),
    }
    if replay_of is not None:
        command["replayOf"] = replay_of
    if feed_format != "auto" or mapping is not None:
        command["format"] = feed_format
        command["mapping"] = dict(mapping) if mapping is not None else None
    return command


def requested_event(command: Mapping[str, Any]) -> dict[str, Any]:
    """The progress event that makes a requested run visible as ``pending`` before the poller starts."""
    return {"type": "requested", "at": command["requestedAt"], **command}


def outcomes_event(
    run_id: str, items: list[dict[str, Any]], at: str, *, batch: bool = False, seqs: Mapping[str, list[int]] | None = None
) -> dict[str, Any]:
    """Outcomes of some of a run's items.

    ``items`` are ``{"seq", "outcome"}`` plus ``key``/``reason``/``stage`` when failed; ``seqs``
    maps an outcome to bare sequence numbers, the compact form for outcomes without details (a
    list of ints costs a fraction of a dict per posting to encode, decode and fold).
    """
    event = {"type": "outcomes", "runId": run_id, "at": at, "items": items, "batch": batch}
    compact = {outcome: numbers for outcome, numbers in (seqs or {}).items() if numbers}
    if compact:
        event["seqs"] = compact
    return event


_NO_DETAILS: Mapping[str, Any] = {}


def _outcomes_of(event: Mapping[str, Any]) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """``(seq, outcome, details)`` of every item an outcomes event reports, in either form."""
    seqs: Mapping[str, list[int]] = event.get("seqs") or {}
    unknown = sorted(set(seqs) - OUTCOME_FIELDS.keys())
    if unknown:  # before anything is yielded: a malformed event changes no counter
        raise ValueError(f"unknown outcome {unknown[0]!r}")
    for item in event["items"]:
        yield item["seq"], item["outcome"], item
    for outcome, numbers in seqs.items():
        for seq in numbers:
            yield seq, outcome, _NO_DETAILS


def clip(text: object, limit: int = MAX_FAILURE_TEXT) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis): keys and reasons come from feeds."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def compact_failures(failures: Iterable[Mapping[str, Any]], kept: int) -> list[dict[str, Any]]:
    """Failed items for an event: the first ``kept`` with clipped key/reason/stage, the rest as bare seqs.

    The fold counts a bare ``{"seq", "outcome": "failed"}`` without listing it (``failuresTruncated``),
    so an event about many failures stays small: about 12 bytes per item past ``kept``.
    """
    out: list[dict[str, Any]] = []
    for index, failure in enumerate(failures):
        item: dict[str, Any] = {"seq": int(failure["seq"]), "outcome": "failed"}
        if index < kept:
            item.update(key=clip(failure.get("key", "")), reason=clip(failure.get("reason", "")),
                        stage=clip(failure.get("stage", "")))
        out.append(item)
    return out


def reconcile_event(row: Mapping[str, Any], at: str) -> dict[str, Any]:
    """Ask the stats agent to project a run again (its import_logs row is unfinished); changes no counter."""
    return {"type": "reconcile", "runId": row["runId"], "at": at}


def timeout_event(row: Mapping[str, Any], at: str, after_seconds: float) -> dict[str, Any]:
    """Finalise a run that outlived RUN_TIMEOUT_SECONDS; carries its import_logs row in case the table lost the run."""
    stored = {key: row[key] for key in ROW_FIELDS if row.get(key) is not None}
    for key in ("requestedAt", "startedAt"):
        if isinstance(stored.get(key), datetime):
            stored[key] = iso(stored[key])
    stored["failures"] = [{k: clip(f.get(k, "")) for k in ("key", "reason", "stage")} for f in stored.get("failures", [])]
    return {"type": "timeout", "runId": row["runId"], "at": at, "afterSeconds": after_seconds, "row": stored}


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
    kind = event["type"]
    if state is None and kind == "timeout" and event.get("row"):
        state = _from_row(str(event["runId"]), event["row"])
    run = dict(state) if state is not None else empty_run(str(event["runId"]))
    run["meta"] = dict(run["meta"])
    run["failures"] = list(run["failures"])
    if run["status"] in FINISHED or kind == "reconcile":
        return run  # late or replayed events never reopen a finished run; a reconcile only re-projects
    run["lastProgressAt"] = event["at"]
    if kind in ("requested", "started"):
        for key in ("sourceUrl", "sourceName", "trigger", "requestedAt"):
            if event.get(key):
                run[key] = event[key]
        if event.get("replayOf"):
            run["meta"]["replayOf"] = event["replayOf"]
        if kind == "started":
            run["status"] = "running"
            run["startedAt"] = run["startedAt"] or event["at"]
    elif kind == "fetched":
        if not run["announced"]:
            _announce(run, int(event["totalFetched"]))
            run["meta"].update(event.get("meta", {}))
            if event.get("error"):  # why the feed was cut short (a partial run keeps the items before)
                run["error"] = clip(event["error"], MAX_ERROR_TEXT)
            _account(run, [(f["seq"], "failed", f) for f in event.get("failures", [])], max_failures_kept)
    elif kind == "outcomes":
        added = _account(run, _outcomes_of(event), max_failures_kept)
        if added and event.get("batch"):
            run["meta"]["batches"] = int(run["meta"].get("batches", 0)) + 1
    elif kind == "failed":
        run["meta"].update(event.get("meta", {}))
        run["error"] = clip(event["error"], MAX_ERROR_TEXT)
        _fail_the_rest(run)
        return _finish(run, "failed", event["at"])
    elif kind == "timeout":
        accounted = _accounted(run)
        unknown = "the runs table did not know the run (lost or expired); " if run.get("restored") else ""
        run["error"] = f"run timed out after {event.get('afterSeconds', '?')}s: {unknown}" + (
            f"{accounted} of {run['totalFetched']} items accounted" if run["announced"] else "the feed was never fetched"
        )
        run.pop("restored", None)
        _fail_the_rest(run)
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


def _from_row(run_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A run state rebuilt from its import_logs row (for a run the runs table lost): only enough to finalise it."""
    run = empty_run(run_id)
    for key in ROW_FIELDS:
        if row.get(key) is not None:
            run[key] = row[key]
    run["failures"] = list(run["failures"])
    run["announced"] = int(run["totalFetched"]) > 0
    run["restored"] = True
    return run


def _announce(run: dict[str, Any], total: int) -> None:
    """Fix the run's size; take back the outcomes counted early for sequence numbers the feed does not hold."""
    run["announced"] = True
    run["totalFetched"] = total
    for outcome, bits in run.pop("pre", {}).items():
        beyond = _count_from(_bits(bits), total)
        run[OUTCOME_FIELDS[outcome]] -= beyond
    seen = _bits(run["seen"])
    _clear_from(seen, total)
    run["seen"] = _text(seen)
    run["failures"] = [f for f in run["failures"] if int(f.get("seq", 0)) < total]


def _fail_the_rest(run: dict[str, Any]) -> None:
    """A run ending early: every announced item without an outcome is a failed item (the SPEC invariant)."""
    if not run["announced"]:
        run["totalFetched"] = _accounted(run)  # the items known to exist are those with an outcome
        run.pop("pre", None)
        return
    run["failedJobs"] += max(int(run["totalFetched"]) - _accounted(run), 0)


ZIPPED = "z:"  # not in the base64 alphabet: a bitmap written before compression reads as it is


def _bits(text: str) -> bytearray:
    """A bitmap of the run state from its text: base64 of its zlib form (``z:``), or plain base64 (older states)."""
    if text.startswith(ZIPPED):
        return bytearray(zlib.decompress(base64.b64decode(text[len(ZIPPED):])))
    return bytearray(base64.b64decode(text))


def _text(bits: bytes | bytearray) -> str:
    """A bitmap as state text, compressed: a run's bitmaps are long stretches of set or clear bits, and the
    state goes to the runs changelog at every fold (a 1,000,000-item run: 334 KB per write as plain base64)."""
    return ZIPPED + base64.b64encode(zlib.compress(bits, 1)).decode()


def _count_from(bits: bytes | bytearray, first: int) -> int:
    """Set bits at positions >= ``first``."""
    byte, bit = divmod(first, 8)
    if byte >= len(bits):
        return 0
    head = bin(bits[byte] >> bit).count("1")
    return head + sum(bin(b).count("1") for b in bits[byte + 1:])


def _clear_from(bits: bytearray, first: int) -> None:
    byte, bit = divmod(first, 8)
    if byte >= len(bits):
        return
    bits[byte] &= (1 << bit) - 1
    del bits[byte + 1:]


def _account(run: dict[str, Any], items: Iterable[tuple[int, str, Mapping[str, Any]]], max_failures_kept: int) -> int:
    """Count each sequence number once (only those below the announced total); return how many were new.

    A failed item with a ``reason`` is listed in ``failures`` (clipped, at most ``max_failures_kept``);
    one without (see ``compact_failures``) is counted only.
    """
    seen = _bits(run["seen"])
    pre = None if run["announced"] else {k: _bits(v) for k, v in run.get("pre", {}).items()}
    added = 0
    for seq, outcome, item in items:
        seq = int(seq)
        if seq < 0 or (run["announced"] and seq >= int(run["totalFetched"])):
            continue  # not an item of this run's feed
        byte, bit = divmod(seq, 8)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen)))
        if seen[byte] & (1 << bit):
            continue
        seen[byte] |= 1 << bit
        added += 1
        run[OUTCOME_FIELDS[outcome]] += 1
        if pre is not None:
            bits = pre.setdefault(outcome, bytearray())
            if byte >= len(bits):
                bits.extend(bytes(byte + 1 - len(bits)))
            bits[byte] |= 1 << bit
        if outcome == "failed":
            if "reason" in item and len(run["failures"]) < max_failures_kept:
                run["failures"].append(
                    {"key": clip(item.get("key", f"item[{seq}]")), "reason": clip(item.get("reason", "")),
                     "stage": clip(item.get("stage", "")), "seq": seq}
                )
            else:
                run["failuresTruncated"] = True
    run["seen"] = _text(seen)
    if pre is not None:
        run["pre"] = {k: _text(v) for k, v in pre.items()}
    return added


def missing_seqs(run: Mapping[str, Any], limit: int) -> list[int]:
    """Sequence numbers of an announced run that have no outcome yet (at most ``limit``)."""
    seen = _bits(run["seen"])
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


INTERNAL_FIELDS = frozenset({"seen", "announced", "pre", "restored"})


def snapshot(run: Mapping[str, Any]) -> dict[str, Any]:
    """The ``import_logs`` document (SPEC §3) of a run state, with JSON-friendly ISO timestamps."""
    doc = {key: value for key, value in run.items() if key not in INTERNAL_FIELDS}
    doc["failures"] = [{k: v for k, v in failure.items() if k != "seq"} for failure in run["failures"]]
    doc["fileName"] = run["sourceUrl"]
    doc["totalImported"] = int(run["newJobs"]) + int(run["updatedJobs"])
    return doc


LAST_RUN_FIELDS = ("runId", "status", "startedAt", "finishedAt", "requestedAt")


def last_run_update(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ``feeds`` update that makes a run snapshot its feed's ``lastRun``, unless a newer run is there already.

    "Newer" is the runs list's order: ``requestedAt``, then ``runId``. So ``GET /api/feeds`` reads each
    feed's latest run with the feed, in one query. None for a run without a feed URL.
    """
    if not doc.get("sourceUrl"):
        return None
    summary = {key: value for key, value in as_mongo(doc).items() if key in LAST_RUN_FIELDS}
    requested = summary.get("requestedAt")
    older: list[dict[str, Any]] = [{"lastRun": None}]
    if requested is not None:
        older += [{"lastRun.requestedAt": {"$lt": requested}},
                  {"lastRun.requestedAt": requested, "lastRun.runId": {"$lte": summary["runId"]}}]
    return {"url": doc["sourceUrl"], "$or": older}, {"$set": {"lastRun": summary}}


def as_mongo(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot with its timestamps as datetimes, as stored in MongoDB."""
    stored = dict(doc)
    for key in ("requestedAt", "startedAt", "finishedAt"):
        stored[key] = parse_iso(stored.get(key))
    return stored
