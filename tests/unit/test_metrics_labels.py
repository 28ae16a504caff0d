"""The Prometheus ``feed`` label is a short stable id with a bounded number of values (issue 9)."""

from __future__ import annotations

import hashlib

from agents import metrics


def test_feed_label_is_a_short_stable_id_not_the_url() -> None:
    url = "https://jobs.example.com/feed?" + "q=" * 2000
    label = metrics.feed_label(url)
    assert label == hashlib.sha1(url.encode()).hexdigest()[:12] == metrics.feed_label(url)  # noqa: S324
    assert "example" not in label


def test_feed_labels_are_bounded() -> None:
    labels = {metrics.feed_label(f"https://x.example.com/{i}") for i in range(metrics.MAX_FEED_LABELS * 2)}
    assert len(labels) <= metrics.MAX_FEED_LABELS + 1 and "other" in labels
