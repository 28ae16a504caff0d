"""Which feed formats and mappings a parse can be asked for, checked before any parse starts (preview, replay, CLI).

The formats and the mapping schema are defined once, in ``models.feed.mapping`` (SPEC §3a); this names the
answer the API and the CLI give before they start a parse.
"""

from __future__ import annotations

from typing import Any

from models.feed import FORMATS, MappingError, validate_feed_format

__all__ = ["DEFAULT_FORMAT", "FORMATS", "format_problem"]

DEFAULT_FORMAT = "auto"


def format_problem(format_: object, mapping: Any) -> str | None:
    """Why ``format_`` and ``mapping`` cannot select a reader, or None when they can."""
    try:
        validate_feed_format(format_, mapping)
    except MappingError as exc:
        return str(exc)
    return None
