"""Field normalisation shared by every format: bounds, text of xmltodict values, markup, categories."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

MAX_LINE_CHARS = 10_000
"""Longest raw text of a single-line field, guid, link, category or date."""
MAX_DESCRIPTION_CHARS = 1_000_000
"""Longest description (a posting travels as one Kafka message and one MongoDB document)."""
MAX_CATEGORIES = 1_000
_ENTITY_REF_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_MARKUP_CHARS = frozenset("<>&\"'")


def _first(values: list[Any], read: Callable[[Any], str]) -> str:
    """The first non-empty reading of a repeated element's values (xmltodict makes a list of them)."""
    return next((text for value in values if (text := read(value))), "")


def _text(value: Any) -> str:
    """Text of an xmltodict value: str, ``{'#text': ...}``, or the first non-empty of a list."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict):
        t = value.get("#text")
        return t if isinstance(t, str) else ""
    if isinstance(value, list):
        return _first(value, _text)
    return ""


class _TooLarge(Exception):
    """A field of an item beyond its bound: the item fails ("item too large"), the rest go on."""

    def __init__(self, field: str, size: int, limit: int, unit: str = "characters") -> None:
        super().__init__(f"item too large: {field} has {size:,} {unit} (limit {limit:,})")


def _bounded(field: str, s: str, limit: int = MAX_LINE_CHARS) -> str:
    """``s`` unchanged, checked before anything runs over it."""
    if len(s) > limit:
        raise _TooLarge(field, len(s), limit)
    return s


def _line(s: str, field: str = "a text field") -> str:
    """Single-line field: HTML entities decoded once, whitespace collapsed (bounded first)."""
    if len(s) > MAX_LINE_CHARS:
        raise _TooLarge(field, len(s), MAX_LINE_CHARS)
    if "&" in s:
        s = html.unescape(s)
    return " ".join(s.split())


def _decode_entity(m: re.Match[str]) -> str:
    ref = m.group()
    ch = html.unescape(ref)
    return ref if ch in _MARKUP_CHARS else ch


def _markup(value: Any) -> str:
    """HTML description: kept as markup, with character entities (``&ndash;``) decoded.

    ``&lt; &gt; &amp; &quot; &#39;`` stay encoded: decoding them would turn escaped text
    into live markup. Inline XHTML children (Atom ``type="xhtml"``) are re-serialised.
    """
    if isinstance(value, list):
        return _first(value, _markup)
    if isinstance(value, dict):
        children = {k: v for k, v in value.items() if k[0] not in "@#"}
        if children:
            s = _unparse(children)
            text = value.get("#text")
            if isinstance(text, str):
                s = f"{text}{s}"
        else:
            s = _text(value)
    elif isinstance(value, str):
        s = value
    else:
        return ""
    s = s.strip()
    if len(s) > MAX_DESCRIPTION_CHARS:
        raise _TooLarge("description", len(s), MAX_DESCRIPTION_CHARS)
    if "&" in s:
        s = _ENTITY_REF_RE.sub(_decode_entity, s)
    return s


def _unparse(children: Mapping[str, Any]) -> str:
    """Inline markup back to text: ``xmltodict.unparse(children, full_document=False)`` for the values
    the item reader builds (str, None, dicts of those, lists of those), a quarter of its cost.

    Children in order, each element's children before its text, text and attributes escaped as
    ``xml.sax.saxutils`` does; ``tests/unit/test_item_reader.py`` compares it with xmltodict.
    """
    out: list[str] = []
    for name, value in children.items():
        _unparse_element(name, value, out)
    return "".join(out)


def _unparse_element(name: str, value: Any, out: list[str]) -> None:
    for v in value if type(value) is list else (value,):
        if v is None:
            out.append(f"<{name}></{name}>")
        elif type(v) is str:
            out.append(f"<{name}>{_escape(v)}</{name}>")
        else:
            attrs = "".join(f" {key[1:]}={quoteattr(attr)}" for key, attr in v.items() if key[0] == "@")
            out.append(f"<{name}{attrs}>")
            for key, child in v.items():
                if key[0] != "@" and key != "#text":
                    _unparse_element(key, child, out)
            text = v.get("#text")
            if text:
                out.append(_escape(text))
            out.append(f"</{name}>")


def _escape(text: str) -> str:
    """``xml.sax.saxutils.escape`` without its entity table (the most frequent call of ``_unparse``)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    return text


def _categories(*values: Any) -> tuple[str, ...]:
    """Category names from strings, ``{'#text'}``/``{'@term'}`` dicts or lists, de-duplicated."""
    seen: dict[str, None] = {}
    for value in values:
        if value is None:
            continue
        for v in value if isinstance(value, list) else (value,):
            if isinstance(v, str):
                name = v
            elif isinstance(v, dict):
                raw = v.get("@term") or v.get("#text") or v.get("@label")
                name = raw if isinstance(raw, str) else ""
            else:
                continue
            name = _line(name, "a category")
            if name:
                seen[name] = None
                if len(seen) > MAX_CATEGORIES:
                    raise _TooLarge("categories", len(seen), MAX_CATEGORIES, "entries")
    return tuple(seen)
