"""Pure parts of replay and preview: why a payload is missing, request bodies, the preview's collected rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from api.models import PreviewRequest, ReplayRequest, validated
from api.preview import PreviewCollector
from api.queries import ApiError
from models.feedstream import FeedSummary
from models.replay import missing_payload_reason, replayed_run

NOW = datetime(2025, 1, 10, tzinfo=UTC)


def run(**fields: Any) -> dict[str, Any]:
    return {"runId": "r1", "status": "completed", "requestedAt": NOW - timedelta(days=1), "meta": {"bytes": 1000}, **fields}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (run(requestedAt=NOW - timedelta(days=8)), "has expired"),
        (run(meta={"bytes": 40 * 1024 * 1024}), "was never stored"),
        (run(meta={"notModified": True, "bytes": 0}), "304 Not Modified"),
        (run(status="failed", meta={}, error="HTTP 500"), "it failed: HTTP 500"),
        (run(), "is no longer stored"),
    ],
)
def test_a_missing_payload_is_explained(row: dict[str, Any], fragment: str) -> None:
    assert fragment in missing_payload_reason(row, NOW, 7)


def test_a_replay_of_a_replay_parses_the_payload_it_replayed() -> None:
    assert replayed_run(run()) == "r1"
    assert replayed_run(run(runId="r2", meta={"replayOf": "r1"})) == "r1"


def replay_request(body: Any) -> ReplayRequest:
    return validated(ReplayRequest, body)


def preview_request(body: Any) -> PreviewRequest:
    return validated(PreviewRequest, body)


def test_replay_and_preview_bodies_are_checked() -> None:
    assert replay_request({"runId": " r1 "}).runId == "r1"
    assert replay_request({"feed": "https://x.example/feed"}).feed == "https://x.example/feed"
    for bad in (None, [], {}, {"runId": "r1", "feed": "https://x.example/f"}, {"runId": ""}, {"runId": "a\nb"},
                {"feed": "x"}, {"other": 1}):
        with pytest.raises(ApiError) as raised:
            replay_request(bad)
        assert raised.value.status == 400
    assert preview_request({"url": "https://x.example/f", "format": "atom"}).format == "atom"
    for bad in ({}, {"url": "x"}, {"url": "https://x.example/f", "format": "csv"},
                {"url": "https://x.example/f", "mapping": {"item": "job"}}, {"url": "https://x.example/f", "mapping": 3}):
        with pytest.raises(ApiError):
            preview_request(bad)


def test_a_preview_keeps_the_first_postings_and_failures_and_counts_a_cut_short_rest() -> None:
    collector = PreviewCollector(max_items=2, max_failures=1)
    collector.add([(n, orjson.dumps({"title": f"t{n}", "seq": n}), 0) for n in range(3)])
    collector.add([(3, "k3", "missing guid and link", "normalise"), (4, "k4", "bad", "normalise")])
    done = collector.result("auto", FeedSummary("rss", "Jobs", 5), 5, None)
    assert done["items"] == [{"title": "t0"}, {"title": "t1"}] and done["format"] == "rss"
    assert (done["totalFetched"], done["failedCount"], done["failuresTruncated"], done["error"]) == (5, 2, True, None)
    cut = collector.result("auto", FeedSummary("rss", "Jobs", 5, "feed has more than 5 items"), 5, None)
    assert (cut["totalFetched"], cut["failedCount"], cut["error"]) == (6, 3, "feed has more than 5 items")
