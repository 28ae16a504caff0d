"""The XML guard: hostile or broken documents are refused before (and while) items are read.

A first expat pass reads only the prolog (it stops at the root element) and rejects any entity
declaration and any internal DTD subset (``<!DOCTYPE x [...]>``: ATTLIST defaults multiply the work
of every element). A second pass without Python callbacks (C speed) checks the whole document is
well-formed, so a broken document fails as a whole before any item is handed out. The item parse
refuses entity declarations again, as a second line of defence, and nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

from typing import Any, Protocol
from xml.parsers import expat

from models.feed.records import FeedError, clip

REFUSED_ENTITIES = "refused: XML declares entities (possible entity-expansion or XXE attack)"

REFUSED_DTD = "refused: XML has an internal DTD subset (<!DOCTYPE ... [ ... ]>: declarations are not accepted)"
REFUSED_DEPTH = "refused: elements nested deeper than {max_depth} levels"

MAX_DEPTH = 100
"""Deepest element nesting accepted (real feeds: under 20, XHTML content included)."""
HTML_SNIFF_BYTES = 4096

_BOM = b"\xef\xbb\xbf"
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what a bytes regex calls \s


class ExpatHandlers(Protocol):
    """What the guarded parse needs of an item reader: to put its handlers on the parser."""

    def attach(self, parser: Any) -> None: ...


class _EntityDeclared(Exception):
    pass


class _RootReached(Exception):
    pass


class _InternalSubset(Exception):
    pass


class _TooDeep(Exception):
    pass


def check_safe_xml(payload: bytes) -> None:
    """Refuse XML that declares entities (billion laughs, XXE) or has an internal DTD subset.

    Uses expat itself on the prolog only (it stops at the root element), so the check
    sees exactly what the real parser sees, whatever the encoding, comments or quoting.
    Raises FeedError when entities are declared, an internal subset is present (ATTLIST
    defaults are an amplification: every element gets the declared attributes) or the
    prolog is not well-formed.
    """
    _read_prolog(payload)


def _read_prolog(payload: bytes) -> tuple[str, dict[str, str]]:
    """Return the root element's name and attributes, refusing entity declarations and internal subsets.

    An entity declaration is reported as such (the more precise reason); any other internal
    subset is refused when its end is reached (parsing declarations is linear; only their
    use in the body amplifies).
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root: list[tuple[str, dict[str, str]]] = []
    subset: list[bool] = []

    def on_entity(*_args: Any) -> None:
        raise _EntityDeclared

    def on_external(*_args: Any) -> int:
        raise _EntityDeclared

    def on_doctype(_name: str, _system_id: str | None, _public_id: str | None, has_internal_subset: int) -> None:
        subset.append(bool(has_internal_subset))

    def on_doctype_end() -> None:
        if any(subset):
            raise _InternalSubset

    def on_start(name: str, attrs: dict[str, str]) -> None:
        root.append((name, attrs))
        raise _RootReached

    parser.EntityDeclHandler = on_entity
    parser.ExternalEntityRefHandler = on_external
    parser.StartDoctypeDeclHandler = on_doctype
    parser.EndDoctypeDeclHandler = on_doctype_end
    parser.StartElementHandler = on_start
    try:
        parser.Parse(payload, True)
    except _RootReached:
        return root[0]
    except _EntityDeclared:
        raise FeedError(REFUSED_ENTITIES) from None
    except _InternalSubset:
        raise FeedError(REFUSED_DTD) from None
    except expat.ExpatError as exc:
        raise _parse_error(payload, exc) from exc
    except (LookupError, ValueError) as exc:  # the declared encoding: unknown, or multi-byte (UTF-32, UTF-7...)
        raise FeedError(f"XML parse error: {clip(str(exc), 200)}") from exc
    raise FeedError("XML parse error: no root element")  # pragma: no cover - expat raises


def _check_well_formed(payload: bytes) -> None:
    """The whole document through expat with no Python callback (C speed): FeedError if broken.

    Run before any item is handed out, so a truncated or otherwise broken feed fails as a
    whole instead of after some of its items were published. Entities and internal subsets
    were refused by the prolog check already; no external entity is ever loaded.
    """
    _parse_guarded(payload)


def _parse_guarded(payload: bytes, reader: ExpatHandlers | None = None) -> None:
    """The whole document through expat, with ``reader``'s handlers if given: FeedError if broken.

    An entity declaration is refused here too (never reached after the prolog check: a further
    guard); no external entity is ever loaded. Exceptions of the reader's own pass through.
    """
    # No interning of names: pyexpat keeps every distinct element and attribute name it interned for the
    # whole parse (about 110 bytes each), so a feed of millions of distinct names grew past the item bounds.
    parser = expat.ParserCreate(intern=None)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    if reader is not None:
        reader.attach(parser)

    def on_entity(*_args: Any) -> None:
        raise _EntityDeclared

    parser.EntityDeclHandler = on_entity
    try:
        parser.Parse(payload, True)
    except _EntityDeclared:
        raise FeedError(REFUSED_ENTITIES) from None
    except expat.ExpatError as exc:
        raise _parse_error(payload, exc) from exc


_EXPAT_NO_MEMORY = expat.errors.codes[expat.errors.XML_ERROR_NO_MEMORY]


def _parse_error(payload: bytes, exc: expat.ExpatError) -> FeedError:
    """The feed's error for an expat error; expat out of memory is a MemoryError (the parse's limit, not the feed's fault)."""
    if exc.code == _EXPAT_NO_MEMORY:
        raise MemoryError("expat: out of memory") from exc
    if looks_like_html(payload):
        return FeedError(f"not a feed: looks like an HTML page (XML parse error: {exc})")
    return FeedError(f"XML parse error: {exc}")


def is_blank(payload: bytes) -> bool:
    """Nothing but an optional UTF-8 BOM and ASCII whitespace."""
    body = payload[len(_BOM):] if payload.startswith(_BOM) else payload
    return not body or body.isspace()


def looks_like_html(payload: bytes) -> bool:
    """An HTML page (``<!doctype html>`` or ``<html>``) after an optional BOM, XML declaration and comments.

    Plain string scanning over the first ``HTML_SNIFF_BYTES`` bytes: linear whatever the input
    (the regex this replaces backtracked exponentially on ``<!---->`` repeated).
    """
    head = payload[:HTML_SNIFF_BYTES]
    pos = len(_BOM) if head.startswith(_BOM) else 0

    def skip_space(at: int) -> int:
        while at < len(head) and head[at] in _ASCII_SPACE:
            at += 1
        return at

    pos = skip_space(pos)
    if head.startswith(b"<?xml", pos):
        end = head.find(b">", pos)
        if end < 0:
            return False
        pos = skip_space(end + 1)
    while head.startswith(b"<!--", pos):
        end = head.find(b"-->", pos + 4)
        if end < 0:
            return False
        pos = skip_space(end + 3)
    lowered = head[pos:pos + 16].lower()
    if lowered.startswith(b"<!doctype"):
        after = skip_space(pos + 9)
        return after > pos + 9 and head[after:after + 4].lower() == b"html" and _ends_tag_name(head, after + 4)
    return lowered.startswith(b"<html") and _ends_tag_name(head, pos + 5)


def _ends_tag_name(head: bytes, at: int) -> bool:
    return at < len(head) and head[at] in _ASCII_SPACE + b">"
