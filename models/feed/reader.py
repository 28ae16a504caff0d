"""The streaming item reader: expat handlers that build each item in xmltodict's dict shape, bounded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.feed.guard import MAX_DEPTH, _TooDeep

MAX_ITEM_NODES = 100_000
"""Most elements and attributes, counted together, in one item (or other element at item depth).

A real posting has tens, an XHTML description a few thousand. Each costs the reader a dict entry or
a dict before the item can be normalised: up to about 400 bytes each in the worst shape measured
(an attribute on every element), so an item at the bound holds about 40 MB. Without it one item of
millions of small elements took 50 times the feed's size (a 15 MiB feed: 763 MB). Past it the rest
of the item is skipped, not built, and the item fails alone.
"""
MAX_ITEM_TEXT_CHARS = 4_000_000
"""Most characters of text and attribute values in one item, counted as the reader keeps them.

Room for a description at ``MAX_DESCRIPTION_CHARS`` written twice (``description`` and
``content:encoded``) and every other field at its own bound; far more than a posting can carry in
one Kafka message (``KAFKA_MAX_MESSAGE_BYTES``, 1 MiB by default). Up to 4 bytes a character in
memory, so an item at the bound holds at most about 16 MB of text. Past it the item fails alone.
"""

class _Stop(Exception):
    """Raised through expat when the item callback asks to stop reading."""


@dataclass(frozen=True, slots=True)
class _Oversized:
    """What the item reader hands over for an item past ``MAX_ITEM_NODES`` or ``MAX_ITEM_TEXT_CHARS``.

    ``partial`` is what was built of the item before the bound (at most the bound's worth): enough for
    the failure's key when its guid came first.
    """

    reason: str
    partial: Any


TOO_MANY_NODES = f"item too large: more than {MAX_ITEM_NODES:,} elements and attributes"
TOO_MUCH_TEXT = f"item too large: more than {MAX_ITEM_TEXT_CHARS:,} characters of text"


class _ItemReader:
    """expat handlers that build each item as ``xmltodict.parse(item_depth=...)`` builds it, and hand it over.

    The dict shapes are xmltodict's with this module's settings (attributes as ``@name``, text as
    ``#text``, repeated children as lists, inner text stripped, no namespace processing), so
    normalising, and with it every fingerprint, is the same as with xmltodict;
    ``tests/unit/test_item_reader.py`` checks that against xmltodict itself on every sample feed
    and on generated documents. Specialised for this one configuration, it costs about half of
    xmltodict's general handler per element (measured in the parse process: 17.5 against 9 µs per
    posting of the bench feed), and refuses nesting deeper than ``MAX_DEPTH`` in the same call
    (each open level holds a dict and a stack entry before any item closes).

    Each element at item depth is bounded while it is built: past ``MAX_ITEM_NODES`` elements and
    attributes or ``MAX_ITEM_TEXT_CHARS`` characters, what was built is dropped, the rest of it is
    walked without building anything, and ``on_item`` gets an :class:`_Oversized` for it. So memory
    is bounded per item, not by the feed's size. Text outside items is never kept (nothing uses it).

    ``on_item(ancestors, name, value)`` gets each element at ``item_depth`` when it closes:
    ``ancestors`` are the ``(name, attributes or None)`` of the elements above it.
    """

    __slots__ = ("item_depth", "on_item", "skips", "on_skipped", "skipping", "depth", "ancestors", "stack", "item", "data",
                 "nodes", "chars", "oversized")  # fmt: skip

    def __init__(self, item_depth: int, on_item: Callable[[list[tuple[str, dict[str, str] | None]], str, Any], bool],
                 skips: Callable[[list[tuple[str, dict[str, str] | None]], str], bool] | None = None,
                 on_skipped: Callable[[], bool] | None = None) -> None:
        self.item_depth = item_depth
        self.on_item = on_item
        # ``skips(ancestors, name)`` True at an element opening at item depth: nothing of it is built,
        # and ``on_skipped()`` is called when it closes (a parse lane walking past another lane's items).
        self.skips = skips
        self.on_skipped = on_skipped
        self.skipping = False
        self.depth = 0
        self.ancestors: list[tuple[str, dict[str, str] | None]] = []
        self.stack: list[tuple[Any, list[str]]] = []
        self.item: Any = None
        self.data: list[str] = []
        self.nodes = 0  # elements and attributes of the element at item depth being built
        self.chars = 0  # and characters of its text and attribute values
        self.oversized: _Oversized | None = None  # set when it passed a bound: the rest of it is skipped

    def attach(self, parser: Any) -> None:
        parser.ordered_attributes = False
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.characters

    def start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self.depth = self.depth + 1
        if depth < self.item_depth:
            self.ancestors.append((name, attrs or None))
            return
        if depth > MAX_DEPTH:
            raise _TooDeep
        if self.skipping:
            return
        if depth == self.item_depth:
            if self.skips is not None and self.skips(self.ancestors, name):
                self.skipping = True
                return
            self.nodes = self.chars = 0
        if attrs:
            self.nodes += 1 + len(attrs)
            self.chars += sum(map(len, attrs.values()))
            if self.nodes > MAX_ITEM_NODES or self.chars > MAX_ITEM_TEXT_CHARS:
                self._too_large(TOO_MANY_NODES if self.nodes > MAX_ITEM_NODES else TOO_MUCH_TEXT)
                return
            self.stack.append((self.item, self.data))
            self.item = {"@" + key: value for key, value in attrs.items()}
        else:
            nodes = self.nodes = self.nodes + 1
            if nodes > MAX_ITEM_NODES:
                self._too_large(TOO_MANY_NODES)
                return
            self.stack.append((self.item, self.data))
            self.item = None
        self.data = []

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if self.skipping:
            if depth == self.item_depth:
                self.skipping = False
                oversized, self.oversized = self.oversized, None
                if oversized is not None:
                    if not self.on_item(self.ancestors, name, oversized):
                        raise _Stop
                elif self.on_skipped is not None and not self.on_skipped():
                    raise _Stop
            return
        if depth > self.item_depth:  # a child inside an item: attach it to its parent
            data, value = self.data, self.item
            self.item, self.data = self.stack.pop()
            text = "".join(data).strip() or None if data else None
            if value is None:
                value = text
            elif text:
                value["#text"] = text
            parent = self.item
            if parent is None:
                self.item = {name: value}
            elif name in parent:
                previous = parent[name]
                if type(previous) is list:
                    previous.append(value)
                else:
                    parent[name] = [previous, value]
            else:
                parent[name] = value
        elif depth == self.item_depth:  # an item: hand it over (its text unstripped, as xmltodict does)
            value = self.item
            if value is None:
                value = "".join(self.data) if self.data else None
            self.stack.pop()
            self.item, self.data = None, []  # text between items is never used: not kept either
            if not self.on_item(self.ancestors, name, value):
                raise _Stop
        else:
            self.ancestors.pop()
            self.item, self.data = None, []

    def characters(self, text: str) -> None:
        if self.skipping or self.depth < self.item_depth:
            return
        chars = self.chars = self.chars + len(text)
        if chars > MAX_ITEM_TEXT_CHARS:
            self._too_large(TOO_MUCH_TEXT)
        else:
            self.data.append(text)

    def _too_large(self, reason: str) -> None:
        """The element at item depth passed a bound: keep only its top level built so far, skip the rest of it."""
        stack = self.stack
        # stack[0] is what was current before the element at item depth opened; stack[1] holds that
        # element's own value once a child of it is open, else it is ``self.item``.
        partial = stack[1][0] if len(stack) > 1 else self.item if stack else None
        self.oversized = _Oversized(reason, partial)
        stack.clear()
        self.item, self.data = None, []
        self.skipping = True
