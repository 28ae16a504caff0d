"""A posting's shapes: the jobs.changes event matches its published JSON Schema; upserts are replay-safe."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from models.feed import parse_feed
from models.postings import change_event, job_insert, job_upsert, posting_json, search_document

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "models" / "schemas" / "jobs-change.schema.json").read_text())
FEED = (ROOT.parent / "shared" / "feeds" / "careers.atom.xml").read_bytes()


def parsed_value() -> dict[str, object]:
    posting = next(item for item in parse_feed(FEED, "https://careers.example.com/feed").items if hasattr(item, "dedupe_key"))
    return {**posting_json(posting), "runId": "r1", "seq": 0, "fetchedAt": "2025-01-06T10:00:00Z"}  # type: ignore[arg-type]


def test_change_event_matches_the_published_schema() -> None:
    event = change_event(parsed_value(), "created", 1, "2025-01-06T10:00:00Z")
    jsonschema.validate(event, SCHEMA)
    assert json.loads(json.dumps(event)) == event, "the event must be plain JSON"


def test_schema_rejects_an_unchanged_event() -> None:
    event = change_event(parsed_value(), "unchanged", 1, "2025-01-06T10:00:00Z")
    try:
        jsonschema.validate(event, SCHEMA)
    except jsonschema.ValidationError:
        return
    raise AssertionError("unchanged postings are not changes")


def test_insert_and_upsert_are_keyed_by_dedupe_key_and_carry_event_time() -> None:
    event = change_event(parsed_value(), "updated", 3, "2025-01-06T10:00:00Z")
    document = job_insert(event)
    assert document["_id"] == document["dedupeKey"] and document["version"] == 3
    assert document["createdAt"] == document["updatedAt"] and document["updatedAt"].isoformat() == "2025-01-06T10:00:00+00:00"
    flt, update = job_upsert(event)
    assert flt == {"_id": document["dedupeKey"], "version": {"$not": {"$gt": 3}}}, "a version guard: never roll a newer document back"
    assert "_id" not in update["$set"] and update["$set"]["lastRunId"] == "r1"
    assert job_upsert(event) == (flt, update), "the same event always gives the same write"


def test_search_document_is_small_casefolded_and_keyed_by_dedupe_key() -> None:
    event = change_event(parsed_value(), "updated", 2, "2025-01-06T10:00:00Z")
    event["job"] = {**event["job"], "title": "Senior STRASSE Engineer", "company": "  Ärzte Straße GmbH ",
                    "publishedAt": "2025-01-05T08:30:00Z"}
    document = search_document(event)
    assert set(document) == {"_id", "sourceUrl", "company", "text", "publishedAt", "version"} and document["version"] == 2
    assert document["_id"] == event["job"]["dedupeKey"] and document["sourceUrl"] == event["job"]["sourceUrl"]
    assert document["company"] == "ärzte strasse gmbh"
    assert document["text"] == "senior strasse engineer\n  ärzte strasse gmbh "
    assert document["publishedAt"].isoformat() == "2025-01-05T08:30:00+00:00"


def test_search_document_of_a_posting_without_company_or_date() -> None:
    event = change_event(parsed_value(), "created", 1, "2025-01-06T10:00:00Z")
    event["job"] = {**event["job"], "title": "Job", "company": None, "publishedAt": None}
    document = search_document(event)
    assert (document["company"], document["text"], document["publishedAt"]) == ("", "job\n", None)
