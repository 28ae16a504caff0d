"""Which feed formats and mappings a parse can be asked for, checked before any parse starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# ``auto`` tells RSS 2.0, Atom and RSS 1.0/RDF apart by the root element; naming one of them reads the
# same way (the root element decides).
FORMATS = ("auto", "rss", "atom", "rdf")
DEFAULT_FORMAT = "auto"


def format_problem(format_: object, mapping: Mapping[str, Any] | None) -> str | None:
    """Why ``format_`` and ``mapping`` cannot select a reader, or None when they can.

    They select how a feed's items are read: today the RSS/Atom/RDF reader only, which takes no mapping.
    """
    if not isinstance(format_, str) or format_ not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}, got {str(format_)[:40]!r}"
    if mapping is not None:
        return f"format {format_!r} takes no mapping"
    return None
