"""Text from outside (feed URLs, names, a server's reason phrase, a parser's error) made safe to log and show.

Control characters (C0, DEL, C1), invisible format characters (bidi overrides, zero-width), the
Unicode line/paragraph separators and lone surrogates: none belongs in a log line or an
``import_logs`` field, and each could forge, hide or break one (a lone surrogate cannot even be
encoded as UTF-8, so the store refuses the document). No regex: a walk over the characters.
"""

from __future__ import annotations

import unicodedata

UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Names are free text (emoji sequences use zero-width joiners): only what breaks a line or an encoding is refused.
LINE_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})


def unprintable(char: str) -> bool:
    return unicodedata.category(char) in UNPRINTABLE_CATEGORIES


def printable(text: str, limit: int = 500) -> str:
    """``text`` with each unprintable character written as its ``\\uXXXX`` escape, cut to ``limit`` characters."""
    escaped = "".join(f"\\u{ord(char):04x}" if unprintable(char) else char for char in text[:limit])
    return escaped + ("…" if len(text) > limit else "")
