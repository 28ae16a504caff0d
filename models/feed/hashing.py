"""Identity and content hashes of a posting (SPEC §2): the dedupe key and the fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from models.feed.dates import _to_utc, parse_date

FINGERPRINT_VERSION = "jobstream-fingerprint-v1"
"""Mixed into every fingerprint so a future change of the recipe is explicit, never silent."""


def dedupe_key(source_url: str, external_id: str) -> str:
    """``sha1(sourceUrl + "|" + externalId)`` as lower-case hex (SPEC §2)."""
    data = f"{source_url}|{external_id}".encode("utf-8", "surrogatepass")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def fingerprint(fields: Mapping[str, Any]) -> str:
    """Stable content hash of a posting given its camelCase fields (SPEC §2).

    Only the content fields count (title, company, location, jobType, categories, region,
    url, description, publishedAt): identity and bookkeeping keys (sourceName, dedupeKey,
    version, runId, ...) and the mapping's key order are ignored. Categories are compared
    as a set (a feed reshuffling them is not an edit). publishedAt may be a datetime, an
    ISO string or None; equal instants give equal fingerprints.
    """
    raw_categories = fields.get("categories") or ()
    if isinstance(raw_categories, str):
        raw_categories = (raw_categories,)
    return _fingerprint(
        _field_str(fields.get("title")),
        _field_str(fields.get("company")),
        _field_str(fields.get("location")),
        _field_str(fields.get("jobType")),
        [str(c) for c in raw_categories],
        _field_str(fields.get("region")),
        _field_str(fields.get("url")),
        _field_str(fields.get("description")),
        _published_iso(fields.get("publishedAt")),
    )


def _fingerprint(
    title: str,
    company: str,
    location: str,
    job_type: str,
    categories: Iterable[str],
    region: str,
    url: str,
    description: str,
    published_iso: str,
) -> str:
    """Hash a fixed-order JSON array: unambiguous, and identical in every process.

    The bytes are those of the stdlib encoder below (``ensure_ascii=False``, compact). orjson writes
    the same bytes for every string without a lone surrogate, in a fifth of the time (checked for
    every code point in ``tests/unit/test_feed.py``); a lone surrogate, which orjson refuses, takes
    the stdlib path.
    """
    fields = [FINGERPRINT_VERSION, title, company, location, job_type, sorted(categories), region, url, description,
              published_iso]
    try:
        blob = orjson.dumps(fields)
    except TypeError:
        blob = _FP_ENCODER.encode(fields).encode("utf-8", "surrogatepass")
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


_FP_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _field_str(value: Any) -> str:
    return "" if value is None else str(value)


def _published_iso(value: Any) -> str:
    """Canonical ISO form of a publishedAt value, so datetime and JSON string agree."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return _to_utc(value).isoformat()
    text = str(value)
    parsed = parse_date(text)
    return parsed.isoformat() if parsed is not None else text.strip()
