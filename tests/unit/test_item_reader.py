"""The item reader and the markup serialiser against xmltodict itself, the reference for their shapes.

Normalising (and with it every fingerprint) reads the dicts the reader builds, so the reader must
build exactly what ``xmltodict.parse(item_depth=...)`` built with the settings the parse used before
it: a difference here would turn a re-import into a wave of "updated". Checked on every sample feed
and on generated documents full of what real and hostile feeds carry (attributes, mixed content,
CDATA, comments, processing instructions, entities, repeated and empty children, deep nesting).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from xml.parsers import expat

import pytest
import xmltodict  # type: ignore[import-untyped,unused-ignore]

from models.feed import FeedError, fields, parse_feed, reader

FEEDS = Path(__file__).resolve().parents[3] / "shared" / "feeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = sorted([*FEEDS.glob("*.xml"), *FIXTURES.glob("*.xml")])

Record = tuple[list[tuple[str, Any]], str, Any]


def by_xmltodict(payload: bytes, item_depth: int) -> list[Record]:
    records: list[Record] = []

    def keep(path: list[tuple[str, Any]], value: Any) -> bool:
        records.append((list(path[:-1]), path[-1][0], value))
        return True

    xmltodict.parse(payload, disable_entities=True, process_namespaces=False, item_depth=item_depth, item_callback=keep)
    return records


def by_reader(payload: bytes, item_depth: int) -> list[Record]:
    records: list[Record] = []

    def keep(ancestors: list[tuple[str, Any]], name: str, value: Any) -> bool:
        records.append((list(ancestors), name, value))
        return True

    parser = expat.ParserCreate()
    reader._ItemReader(item_depth, keep).attach(parser)
    parser.Parse(payload, True)
    return records


def markup_values(value: Any) -> list[dict[str, Any]]:
    """Every dict inside an item: each is a possible inline-markup description."""
    if isinstance(value, list):
        return [found for v in value for found in markup_values(v)]
    if isinstance(value, dict):
        return [value, *(found for v in value.values() for found in markup_values(v))]
    return []


def assert_same(payload: bytes) -> int:
    """The reader and xmltodict agree on every item at both streaming depths; returns the items compared."""
    compared = 0
    for depth in (2, 3):
        expected = by_xmltodict(payload, depth)
        assert by_reader(payload, depth) == expected
        for _, _, value in expected:
            for element in markup_values(value):
                children = {k: v for k, v in element.items() if k[0] not in "@#"}
                assert fields._unparse(children) == xmltodict.unparse(children, full_document=False)
        compared += len(expected)
    return compared


def well_formed(payload: bytes) -> bool:
    try:
        parse_feed(payload, "https://feeds.example/x.xml")
    except FeedError:
        return False
    return True


@pytest.mark.parametrize("path", [p for p in SAMPLES if well_formed(p.read_bytes())], ids=lambda p: p.name)
def test_sample_feeds_read_as_xmltodict_reads_them(path: Path) -> None:
    assert assert_same(path.read_bytes()) > 0


NAMES = ("item", "title", "p", "b", "a", "job_listing:company", "dc:creator", "content:encoded", "x-y.z", "br")
ATTR_NAMES = ("href", "rel", "isPermaLink", "xmlns:dc", "term", "data-x")
TEXTS = ("", " ", "plain", "  padded  ", "line\nbreak", "tab\there", "a & b", "<tag> in text", 'quote " and \' both',
         "caf\u00e9 \u2028 \U0001f600", "]]", "&amp;already", "\r\n")


def text_node(rng: random.Random) -> str:
    raw = rng.choice(TEXTS)
    form = rng.randrange(4)
    if form == 0 and "]]>" not in raw:
        return f"<![CDATA[{raw}]]>"
    escaped = raw.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if form == 1:
        return escaped + rng.choice(("&#8211;", "&#x2028;", "&lt;p&gt;", "&quot;"))
    return escaped


def element(rng: random.Random, depth: int) -> str:
    name = rng.choice(NAMES)
    attrs = ""
    for attr in rng.sample(ATTR_NAMES, rng.randrange(3)):
        value = rng.choice(TEXTS).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        attrs += f' {attr}="{value}"'
    if rng.random() < 0.15:
        return f"<{name}{attrs}/>"
    parts = []
    for _ in range(rng.randrange(5) if depth < 6 else 0):
        roll = rng.random()
        if roll < 0.45:
            parts.append(element(rng, depth + 1))
        elif roll < 0.85:
            parts.append(text_node(rng))
        elif roll < 0.93:
            parts.append("<!-- a comment -->")
        else:
            parts.append("<?pi data?>")
    return f"<{name}{attrs}>{''.join(parts)}</{name}>"


def generated(seed: int) -> bytes:
    rng = random.Random(seed)  # noqa: S311 - a reproducible test corpus, not a secret
    items = "\n  ".join(element(rng, 2) for _ in range(rng.randrange(1, 8)))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<rss xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
            f"<channel a=\"1\">\n  {items}\n</channel></rss>").encode()


def test_generated_documents_read_as_xmltodict_reads_them() -> None:
    compared = sum(assert_same(generated(seed)) for seed in range(400))
    assert compared > 1500  # the generator really produced items at both depths


def test_item_text_is_handed_over_unstripped_and_inner_text_stripped() -> None:
    """The two whitespace rules the fingerprints depend on, spelled out."""
    payload = b"<rss><channel><title>  Feed  </title><item><title>  T  </title><d> x <b> y </b> z </d></item></channel></rss>"
    records = by_reader(payload, 3)
    assert [(name, value) for _, name, value in records] == [
        ("title", "  Feed  "),
        ("item", {"title": "T", "d": {"b": "y", "#text": "x  z"}}),
    ]
    assert records == by_xmltodict(payload, 3)
