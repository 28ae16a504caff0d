"""Feeds file parsing and settings validation: clear messages, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.registry import FeedEntry, RegistryError, parse_feeds_file, validate_name, validate_url
from models.text import printable
from streams.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_default_feeds_file_lists_the_public_feeds() -> None:
    entries = parse_feeds_file((ROOT / "feeds.yaml").read_text())
    assert len(entries) == 9
    assert entries[0] == FeedEntry("https://jobicy.com/?feed=job_feed", "Jobicy (all)", True)
    assert entries[-1].url == "https://www.higheredjobs.com/rss/articleFeed.cfm"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("feeds: [ftp://x/feed]", "http"),
        ("feeds: [{name: x}]", "non-empty"),
        ("feeds: [https://a/x, https://a/x]", "twice"),
        ("feeds: {a: 1}", "list"),
        ("feeds: [", "YAML"),
        ("feeds: [{url: 'https://a/x', enabled: 'yes'}]", "boolean"),
    ],
)
def test_invalid_feeds_files_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_feeds_file(text)


def test_bare_urls_get_a_name_and_empty_files_are_empty() -> None:
    assert parse_feeds_file("- https://jobs.example.com/rss") == [FeedEntry("https://jobs.example.com/rss", "jobs.example.com")]
    assert parse_feeds_file("") == []


def test_settings_defaults_match_the_spec() -> None:
    settings = Settings.from_env({})
    assert (settings.batch_size, settings.batch_window_seconds, settings.topic_partitions) == (500, 1.0, 8)
    assert settings.import_interval_minutes == 60 and settings.raw_feed_retention_days == 7
    assert settings.topic("jobs.parsed") == "jobstream.jobs.parsed"
    assert (settings.api_host, settings.api_port, settings.mongo_db) == ("127.0.0.1", 8080, "jobstream")
    assert settings.kafka_max_message_bytes == 1_048_576, "Kafka's broker default: a user's broker needs no change"
    assert 0 < settings.max_posting_bytes < settings.kafka_max_message_bytes


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"BATCH_SIZE": "lots", "MONGO_URL": "postgres://u:hunter2@db/x", "TOPIC_PARTITIONS": "0",
                           "LOG_LEVEL": "LOUD", "API_PORT": "99999", "KAFKA_MAX_MESSAGE_BYTES": "1000"})
    message = str(info.value)
    for expected in ("BATCH_SIZE must be int", "MONGO_URL is not a mongodb:// URL", "TOPIC_PARTITIONS must be > 0",
                     "LOG_LEVEL must be one of", "API_PORT must be a TCP port", "KAFKA_MAX_MESSAGE_BYTES must be >= 65536"):
        assert expected in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, None),
        ({"PARSE_MAX_MEMORY_MB": "178"}, None),  # the 50 MiB default feed limit + 128 MiB
        ({"PARSE_MAX_MEMORY_MB": "177"}, "PARSE_MAX_MEMORY_MB must be at least MAX_FEED_BYTES in MiB + 128"),
        ({"MAX_FEED_BYTES": str(500 * 1024 * 1024)}, "that is 628, got 512"),
        ({"MAX_FEED_BYTES": str(500 * 1024 * 1024), "PARSE_MAX_MEMORY_MB": "1024"}, None),
        ({"PARSE_MAX_MEMORY_MB": "0"}, "PARSE_MAX_MEMORY_MB must be at least"),
        ({"PARSE_MAX_MEMORY_MB": "half a gig"}, "PARSE_MAX_MEMORY_MB must be int"),
    ],
)
def test_parse_memory_limit_leaves_room_for_the_largest_feed(env: dict[str, str], problem: str | None) -> None:
    """A parse process holds its feed's payload before parsing it: a limit below the feed limit fails good feeds."""
    if problem is None:
        assert Settings.from_env(env).parse_max_memory_mb == int(env.get("PARSE_MAX_MEMORY_MB", "512"))
    else:
        with pytest.raises(SettingsError, match=re.escape(problem)):
            Settings.from_env(env)


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings.from_env({"API_TOKEN": "s3cret", "MONGO_URL": "mongodb://u:pw@h:27017"})
    assert "s3cret" not in repr(settings) and "pw" not in repr(settings)
    assert settings.mongo_url_redacted == "mongodb://u:***@h:27017"


@pytest.mark.parametrize("text", ["https://example.com/\ud800.xml", "Jobs \udcff board"])
def test_lone_surrogates_are_refused_in_urls_and_names(text: str) -> None:
    """They cannot be encoded as UTF-8: the store refused the feed with a 500, and run commands naming it broke the worker's decoder."""
    with pytest.raises(RegistryError, match="control|invisible|break"):
        if text.startswith("https"):
            validate_url(text)
        else:
            validate_name(text)


def test_server_text_is_logged_without_control_characters() -> None:
    assert printable("Not Found\x1b[31m\x0b\u202e\ud800") == "Not Found\\u001b[31m\\u000b\\u202e\\ud800"
    assert printable("x" * 600, 100) == "x" * 100 + "…"
