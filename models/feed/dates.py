"""Feed dates: RFC 822 and ISO 8601 text to aware UTC datetimes, at BSON's millisecond precision."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_DATE_CHARS = 256
"""Longer date text is not a date: parse_date returns None before any pattern runs."""

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
# Minutes east of UTC. RFC 822 names plus common unambiguous ones seen in real feeds;
# an unknown name is read as UTC rather than losing the date.
_ZONES = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "WET": 0,
    "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
    "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
    "AKST": -540, "AKDT": -480, "HST": -600,
    "BST": 60, "CET": 60, "WEST": 60, "CEST": 120, "EET": 120, "EEST": 180, "MSK": 180,
    "JST": 540, "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
}  # fmt: skip
# Linear by construction: the weekday is bounded ({1,20}: an unbounded run of letters is
# quadratic under search), and the tail's whitespace runs are never adjacent to each other
# (``\s*(zone)?\s*\Z`` backtracks quadratically on a long run of spaces before a stray char).
_RFC822_RE = re.compile(
    r"(?:[A-Za-z]{1,20},?\s*)?(\d{1,2})[\s-]+([A-Za-z]{3,9})\.?[\s-]+(\d{2,4})"
    r"(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"
    r"\s*(?:(?:([+-])(\d{2}):?(\d{2})|([A-Za-z]{1,5}))\s*)?\Z"
)


def parse_date(value: str) -> datetime | None:
    """RFC 822 or ISO 8601 text -> aware UTC datetime (millisecond precision); else None.

    An unparseable date is not an item failure: the posting is kept without one.
    Precision is cut to milliseconds because that is what BSON stores, so a posting read
    back from MongoDB hashes to the same fingerprint.
    """
    s = value.strip()
    if not s or len(s) > MAX_DATE_CHARS:
        return None
    try:
        if len(s) >= 8 and s[:4].isdigit():
            return _to_utc(datetime.fromisoformat(s))
        m = _RFC822_RE.match(s)
        if m is not None:
            return _from_rfc822(m)
        return _to_utc(parsedate_to_datetime(s))
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _from_rfc822(m: re.Match[str]) -> datetime:
    """Build the UTC datetime straight from the regex groups (the hot path of big feeds)."""
    day, mon, year, hh, mm, ss, sign, oh, om, zone = m.groups()
    month = _MONTHS.get(mon[:3].lower())
    if month is None:
        raise ValueError(f"unknown month {mon!r}")
    y = int(year)
    if len(year) == 2:
        y += 2000 if y < 50 else 1900
    if sign is not None:
        offset = int(oh) * 60 + int(om)
        if sign == "-":
            offset = -offset
    else:
        offset = _ZONES.get(zone.upper(), 0) if zone else 0
    dt = datetime(y, month, int(day), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC)
    return dt - timedelta(minutes=offset) if offset else dt


def _to_utc(dt: datetime) -> datetime:
    """Aware UTC at millisecond precision; a naive datetime is taken to be UTC already."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if dt.microsecond % 1000:
        dt = dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)
    return dt
