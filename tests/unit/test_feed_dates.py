"""Feed dates to aware UTC datetimes."""

from datetime import UTC, datetime

import pytest

from models.feed import (
    parse_date,
)
from tests.unit.feed_helpers import only_posting, rss

# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, 06 Jan 2025 10:00:00 +0000", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 GMT", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 EST", datetime(2025, 1, 6, 15, 0, tzinfo=UTC)),
        ("Mon, 06 Jul 2025 10:00:00 PDT", datetime(2025, 7, 6, 17, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 CET", datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 -0530", datetime(2025, 1, 6, 15, 30, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 +01:00", datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
        ("06 Jan 2025 10:00 +0000", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 6 January 2025 10:00:00 Z", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 25 10:00:00 GMT", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 XYZ", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("Tue, 31 Dec 2024 23:30:00 -0100", datetime(2025, 1, 1, 0, 30, tzinfo=UTC)),
        ("  Mon, 06 Jan 2025 10:00:00 +0000 \n", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00Z", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00+02:00", datetime(2025, 1, 6, 8, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00-0500", datetime(2025, 1, 6, 15, 0, tzinfo=UTC)),
        ("2025-01-06T10:00:00.123456Z", datetime(2025, 1, 6, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2025-01-06 10:00:00", datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
        ("2025-01-06", datetime(2025, 1, 6, tzinfo=UTC)),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("Mon, 31 Feb 2025 10:00:00 GMT", None),
        ("Mon, 06 Foo 2025 10:00:00 GMT", None),
        ("2025-13-01T00:00:00Z", None),
        ("2025-1-6", None),
        ("Mon, 06 Jan 2025 25:00:00 GMT", None),
    ],
)
def test_parse_date(text: str, expected: datetime | None) -> None:
    parsed = parse_date(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_pub_date_in_feed_is_aware_utc() -> None:
    job = only_posting(rss("<item><guid>1</guid><pubDate>Mon, 06 Jan 2025 10:00:00 EST</pubDate></item>"))
    assert job.published_at == datetime(2025, 1, 6, 15, 0, tzinfo=UTC)
    assert job.published_at is not None and job.published_at.tzinfo is UTC
