"""The feed registry file (FEEDS_FILE): parsed and validated without touching the network."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from models.feed.mapping import MappingError, validate_feed_format
from models.text import LINE_BREAKING_CATEGORIES, UNPRINTABLE_CATEGORIES


class RegistryError(ValueError):
    """The feeds file or a feed entry is invalid; the message says which entry and why."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """A registered feed: where it is, its name, and how it is read (``format``, ``mapping``: SPEC §3a)."""

    url: str
    name: str
    enabled: bool = True
    format: str = "auto"
    mapping: dict[str, Any] | None = None


ENTRY_FIELDS = ("url", "name", "enabled", "format", "mapping")


def feed_format_of(raw: Mapping[str, Any], where: str = "feed") -> tuple[str, dict[str, Any] | None]:
    """The ``format`` and ``mapping`` of a feed entry or request body, validated (``models.feed.mapping``).

    The RegistryError names the field and why (``mapping.fields.title: missing ...``): the API's 400.
    """
    try:
        return validate_feed_format(raw.get("format"), raw.get("mapping"))
    except MappingError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def entry_of(doc: Mapping[str, Any]) -> FeedEntry:
    """A FeedEntry from a stored registry document (older documents have no format: ``auto``)."""
    mapping = doc.get("mapping")
    return FeedEntry(str(doc["url"]), str(doc.get("name") or ""), bool(doc.get("enabled", True)),
                     str(doc.get("format") or "auto"), dict(mapping) if isinstance(mapping, Mapping) else None)


MAX_URL_LENGTH = 2000
# What may not stand in a URL or a name: models/text.py (lone surrogates included: the store could not encode them).
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_NAME_LENGTH = 200


def validate_url(url: object) -> str:
    """An http(s) URL with a host, at most MAX_URL_LENGTH characters, no control or invisible characters.

    URLs reach log lines, import_logs and the dashboard: a ``\n`` in one would forge a log line.
    """
    if not isinstance(url, str) or not url.strip():
        raise RegistryError("feed url must be a non-empty string")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise RegistryError(f"feed url must be at most {MAX_URL_LENGTH} characters, got {len(url)}")
    if any(unicodedata.category(char) in UNPRINTABLE_CATEGORIES for char in url):
        raise RegistryError(f"feed url must not contain control or invisible characters, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when it is not a number in 0-65535
    except ValueError:
        raise RegistryError(f"feed url is not a valid URL, got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"feed url must be an http(s) URL with a host, got {url!r}")
    if port == 0:
        raise RegistryError(f"feed url has port 0, got {url!r}")
    return url


def entry_from(raw: Any, where: str = "feed") -> FeedEntry:
    """A FeedEntry from a YAML/JSON value: a URL string or ``{url, name?, enabled?, format?, mapping?}``."""
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected a URL or a mapping with 'url', got {type(raw).__name__}")
    unknown = sorted(str(key) for key in raw if key not in ENTRY_FIELDS)
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; a feed has {', '.join(ENTRY_FIELDS)}")
    url = validate_url(raw.get("url"))
    feed_format, mapping = feed_format_of(raw, where)
    name = raw.get("name")
    enabled = raw.get("enabled", True)
    if (name is not None and not isinstance(name, str)) or not isinstance(enabled, bool):
        raise RegistryError(f"{where}: 'name' must be a string and 'enabled' a boolean")
    return FeedEntry(url, validate_name(name) if name and name.strip() else urlsplit(url).netloc, enabled, feed_format, mapping)


def validate_name(name: object) -> str:
    """A feed's display name: non-empty, at most MAX_NAME_LENGTH characters, on one line (it reaches the logs)."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError("feed name must be a non-empty string")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError(f"feed name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if any(unicodedata.category(char) in LINE_BREAKING_CATEGORIES or char in _BIDI_CONTROLS for char in name):
        raise RegistryError(f"feed name must not contain control characters, got {name!r}")
    return name


def parse_feeds_file(text: str) -> list[FeedEntry]:
    """``feeds: [...]`` (or a bare list) of URLs or mappings; duplicates are an error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"feeds file is not valid YAML: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("feeds")
    if data is None:
        return []
    if not isinstance(data, list):
        raise RegistryError("feeds file must hold a list under 'feeds'")
    entries = [entry_from(raw, f"feeds[{index}]") for index, raw in enumerate(data)]
    seen: set[str] = set()
    for entry in entries:
        if entry.url in seen:
            raise RegistryError(f"feed listed twice: {entry.url}")
        seen.add(entry.url)
    return entries
