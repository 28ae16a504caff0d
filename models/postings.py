"""The shapes a posting takes on its way: JSON on Kafka, a change event, a ``jobs`` upsert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.feed import JobPosting
from models.runs import iso, parse_iso

# Fields of a jobs.parsed value that are the posting itself (SPEC §3 names), not run bookkeeping.
JOB_FIELDS = (
    "dedupeKey", "sourceUrl", "sourceName", "externalId", "title", "company", "location", "jobType",
    "categories", "region", "url", "description", "publishedAt", "fingerprint",
)


def posting_json(posting: JobPosting) -> dict[str, Any]:
    """A posting as JSON for ``jobs.parsed`` (timestamps as ISO-8601 strings)."""
    doc = posting.to_document()
    published = doc.get("publishedAt")
    doc["publishedAt"] = iso(published) if published is not None else None
    return doc


def change_event(parsed: Mapping[str, Any], outcome: str, version: int, occurred_at: str) -> dict[str, Any]:
    """The ``jobs.changes`` value (SPEC §4): what downstream consumers see of a created/updated posting."""
    return {
        "type": outcome,
        "runId": parsed["runId"],
        "seq": parsed["seq"],
        "version": version,
        "fingerprint": parsed["fingerprint"],
        "occurredAt": occurred_at,
        "job": {field: parsed.get(field) for field in JOB_FIELDS},
    }


def job_upsert(change: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Filter and update document of the ``jobs`` upsert for one change event.

    Timestamps come from the event, not the clock, so writing the same event twice (a replay)
    leaves the document byte-for-byte the same.
    """
    job = dict(change["job"])
    job["publishedAt"] = parse_iso(job.get("publishedAt"))
    occurred = parse_iso(change["occurredAt"])
    fields = {**job, "version": change["version"], "updatedAt": occurred, "lastRunId": change["runId"]}
    return {"dedupeKey": job["dedupeKey"]}, {"$set": fields, "$setOnInsert": {"createdAt": occurred}}
