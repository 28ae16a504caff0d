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


def job_document(change: Mapping[str, Any]) -> dict[str, Any]:
    """The ``jobs`` document a change event leads to (``_id`` is the dedupeKey), without ``createdAt``.

    Timestamps come from the event, not the clock, so writing the same event twice (a replay)
    leaves the document the same. ``_id`` = dedupeKey makes the key lookup the primary-key lookup,
    which is also the only one FerretDB's SQLite backend does without a scan.
    """
    job = dict(change["job"])
    job["publishedAt"] = parse_iso(job.get("publishedAt"))
    occurred = parse_iso(change["occurredAt"])
    return {"_id": job["dedupeKey"], **job, "version": change["version"], "updatedAt": occurred, "lastRunId": change["runId"]}


def job_insert(change: Mapping[str, Any]) -> dict[str, Any]:
    """The whole document of a created posting: inserted, no lookup."""
    document = job_document(change)
    return {**document, "createdAt": document["updatedAt"]}


def job_upsert(change: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Filter and update of an updated posting (an upsert, so a lost insert is repaired too).

    The filter is a version guard: it matches only a stored version up to this one, so a stale
    writer (a worker still flushing a batch after a rebalance gave its partition away) cannot roll a
    newer document back. Against a newer version the upsert fails with a duplicate ``_id`` (E11000),
    which the sink reads as "already superseded" after checking the stored version (see
    ``agents.sink.write_batch``).
    """
    document = job_document(change)
    key = document.pop("_id")
    return {"_id": key, **version_guard(document["version"])}, {"$set": document, "$setOnInsert": {"createdAt": document["updatedAt"]}}


def version_guard(version: int) -> dict[str, Any]:
    """The filter condition of a guarded upsert: no stored version newer than ``version`` (none at all is fine)."""
    return {"version": {"$not": {"$gt": version}}}


def search_key(text: str) -> str:
    """How ``job_search`` stores text and how the API searches it: casefolded, so matching is case-blind."""
    return text.casefold()


def search_document(change: Mapping[str, Any]) -> dict[str, Any]:
    """The ``job_search`` document of a change event's posting (see ``search_fields``)."""
    return {**search_fields(change["job"]), "version": change["version"]}


def search_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """The ``job_search`` document of a posting (a change's ``job`` or a stored ``jobs`` document).

    Every job list of the API pages through this small collection (its indexes are in each list's
    order) and then reads the page's jobs by ``_id``: ``jobs`` keeps only SPEC's indexes, which makes
    its inserts and updates cheaper. Text is casefolded once here, so a search is a plain substring.
    ``version`` is the posting's, for the same version guard as ``jobs`` (see ``job_upsert``).
    """
    title = job.get("title") or ""
    company = job.get("company") or ""
    published = job.get("publishedAt")
    return {
        "_id": job["dedupeKey"],
        "sourceUrl": job.get("sourceUrl"),
        "company": search_key(company.strip()),
        "text": search_key(f"{title}\n{company}"),
        "publishedAt": parse_iso(published) if isinstance(published, str) or published is None else published,
        "version": job.get("version"),
    }
