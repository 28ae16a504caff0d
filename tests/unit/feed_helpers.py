"""Helpers shared by the feed parser's unit tests (``tests/unit/test_feed_*.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.feed import JobPosting, ParsedFeed, parse_feed

REPO = Path(__file__).resolve().parents[2]
FEEDS = Path(__file__).resolve().parents[3] / "shared" / "feeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SRC = "https://feeds.example/jobs.xml"
REFUSED = "refused: XML declares entities (possible entity-expansion or XXE attack)"


def sha1_key(source_url: str, external_id: str) -> str:
    """The SPEC §2 formula, written out independently of the code under test."""
    return hashlib.sha1(f"{source_url}|{external_id}".encode()).hexdigest()  # noqa: S324


def read(path: Path) -> bytes:
    return path.read_bytes()


def rss(items: str, *, ns: str = "", channel: str = "<title>T</title>") -> bytes:
    """A minimal RSS 2.0 document around the given item XML."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" {ns}><channel>{channel}{items}</channel></rss>').encode()


def atom(entries: str, *, head: str = "<title>A</title>") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">{head}{entries}</feed>').encode()


def only_posting(payload: bytes) -> JobPosting:
    parsed = parse_feed(payload, SRC, "Example")
    assert len(parsed.items) == 1, parsed.items
    item = parsed.items[0]
    assert isinstance(item, JobPosting), item
    return item


def postings(parsed: ParsedFeed) -> list[JobPosting]:
    return [i for i in parsed.items if isinstance(i, JobPosting)]
