"""JobPosting records: their documents, round trips and validation."""

import json
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from models.feed import (
    FeedError,
    ItemFailure,
    JobPosting,
    parse_feed,
)
from tests.unit.feed_helpers import FEEDS, SRC, read, sha1_key

# --------------------------------------------------------------------------- documents


def wp_job(index: int = 0) -> JobPosting:
    job = parse_feed(read(FEEDS / "wp-job-manager.rss.xml"), SRC, "Example").items[index]
    assert isinstance(job, JobPosting)
    return job


def test_to_document_uses_spec_field_names() -> None:
    doc = wp_job().to_document()
    assert list(doc) == [
        "dedupeKey", "sourceUrl", "sourceName", "externalId", "title", "company", "location",
        "jobType", "categories", "region", "url", "description", "publishedAt", "fingerprint",
    ]  # fmt: skip
    assert isinstance(doc["categories"], list)
    assert isinstance(doc["publishedAt"], datetime)


def test_document_round_trip() -> None:
    job = wp_job(3)
    assert JobPosting.from_document(job.to_document()) == job


def test_document_round_trip_through_json() -> None:
    job = wp_job(5)
    wire = json.loads(json.dumps({**job.to_document(), "runId": "r1"}, default=lambda d: d.isoformat()))
    assert isinstance(wire["publishedAt"], str)
    assert JobPosting.from_document(wire) == job


def test_document_round_trip_through_mongo_shape() -> None:
    """pymongo hands back naive UTC datetimes with millisecond precision, plus _id etc."""
    job = JobPosting.build(
        source_url=SRC,
        external_id="x",
        title="T",
        published_at=datetime(2025, 1, 6, 10, 0, 0, 123456, tzinfo=UTC),
    )
    assert job.published_at == datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC)
    stored = {**job.to_document(), "_id": "oid", "version": 2, "createdAt": datetime(2025, 1, 1)}
    assert job.published_at is not None
    stored["publishedAt"] = job.published_at.replace(tzinfo=None)
    back = JobPosting.from_document(stored)
    assert back == job
    assert back.published_at is not None and back.published_at.tzinfo is UTC


def test_from_document_computes_missing_derived_fields_and_keeps_given_ones() -> None:
    job = wp_job(7)
    doc = job.to_document()
    del doc["dedupeKey"], doc["fingerprint"]
    assert JobPosting.from_document(doc) == job
    given = {**job.to_document(), "fingerprint": "f" * 40}
    assert JobPosting.from_document(given).fingerprint == "f" * 40


def test_from_document_defaults_optional_fields() -> None:
    job = JobPosting.from_document({"sourceUrl": SRC, "externalId": "e"})
    assert job == JobPosting.build(source_url=SRC, external_id="e")
    assert (job.title, job.categories, job.published_at) == ("", (), None)
    assert job.dedupe_key == sha1_key(SRC, "e")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"externalId": "e"}, "lacks 'sourceUrl'"),
        ({"sourceUrl": SRC}, "lacks 'externalId'"),
        ({"sourceUrl": SRC, "externalId": ""}, "'externalId' is empty"),
        ({"sourceUrl": SRC, "externalId": "e", "title": 5}, "'title' must be a string"),
        ({"sourceUrl": SRC, "externalId": "e", "categories": "Ops"}, "'categories' must be a list"),
        ({"sourceUrl": SRC, "externalId": "e", "categories": [1]}, "'categories' must be a list"),
        ({"sourceUrl": SRC, "externalId": "e", "publishedAt": "soon"}, "'publishedAt' is not a date"),
        ({"sourceUrl": SRC, "externalId": "e", "publishedAt": 17}, "'publishedAt' must be"),
    ],
)
def test_from_document_rejects_malformed_documents(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobPosting.from_document(doc)


def test_records_are_immutable() -> None:
    job = wp_job()
    with pytest.raises(FrozenInstanceError):
        job.title = "x"  # type: ignore[misc]
    assert replace(job, title="x").title == "x"
    with pytest.raises(FrozenInstanceError):
        ItemFailure("k", "r").reason = "x"  # type: ignore[misc]


def test_feed_error_is_an_exception_with_message() -> None:
    err = FeedError("empty body")
    assert isinstance(err, Exception)
    assert str(err) == "empty body"
