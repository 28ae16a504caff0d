"""The feed registry file (FEEDS_FILE): parsed and validated without touching the network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml


class RegistryError(ValueError):
    """The feeds file or a feed entry is invalid; the message says which entry and why."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    url: str
    name: str
    enabled: bool = True


def validate_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise RegistryError("feed url must be a non-empty string")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"feed url must be an http(s) URL, got {url!r}")
    return url


def entry_from(raw: Any, where: str = "feed") -> FeedEntry:
    """A FeedEntry from a YAML/JSON value: a URL string or ``{url, name?, enabled?}``."""
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected a URL or a mapping with 'url', got {type(raw).__name__}")
    url = validate_url(raw.get("url"))
    name = raw.get("name") or urlsplit(url).netloc
    enabled = raw.get("enabled", True)
    if not isinstance(name, str) or not isinstance(enabled, bool):
        raise RegistryError(f"{where}: 'name' must be a string and 'enabled' a boolean")
    return FeedEntry(url, name.strip(), enabled)


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
