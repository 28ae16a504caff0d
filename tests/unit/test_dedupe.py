"""classify(): created / updated / unchanged, and replays keep their first outcome."""

from __future__ import annotations

from typing import Any

import pytest

from models.dedupe import RECENT_KEPT, classify, forget_rejected, rejected_event


def test_first_sight_is_created_version_1() -> None:
    result = classify(None, "fp1", "run-1", 0)
    assert (result.outcome, result.version, result.replayed) == ("created", 1, False)
    assert result.state["fingerprint"] == "fp1" and result.state["version"] == 1


@pytest.mark.parametrize(
    ("fingerprint", "outcome", "version"),
    [("fp1", "unchanged", 3), ("fp2", "updated", 4)],
)
def test_known_key_is_unchanged_or_updated(fingerprint: str, outcome: str, version: int) -> None:
    previous = {"fingerprint": "fp1", "version": 3, "recent": [["run-0", 5, "updated", 3]]}
    result = classify(previous, fingerprint, "run-1", 7)
    assert (result.outcome, result.version) == (outcome, version)
    assert result.state["recent"][0] == ["run-1", 7, outcome, version]


def test_replayed_item_gets_its_original_outcome_not_unchanged() -> None:
    created = classify(None, "fp1", "run-1", 4)
    replay = classify(created.state, "fp1", "run-1", 4)
    assert (replay.outcome, replay.version, replay.replayed) == ("created", 1, True)
    assert replay.state is created.state


def test_replay_of_an_update_keeps_the_version() -> None:
    first = classify(None, "fp1", "run-1", 0)
    update = classify(first.state, "fp2", "run-2", 0)
    replay = classify(update.state, "fp2", "run-2", 0)
    assert (replay.outcome, replay.version) == ("updated", 2)


def test_same_item_twice_in_one_feed_is_not_a_replay() -> None:
    first = classify(None, "fp1", "run-1", 0)
    second = classify(first.state, "fp1", "run-1", 9)
    assert (second.outcome, second.replayed) == ("unchanged", False)


def test_memory_of_recent_runs_is_bounded() -> None:
    state = classify(None, "fp", "run-0", 0).state
    for i in range(1, RECENT_KEPT * 3):
        state = classify(state, "fp", f"run-{i}", 0).state
    assert len(state["recent"]) == RECENT_KEPT


@pytest.mark.parametrize(
    ("previous", "rejected", "expected"),
    [
        (None, "fp1", None),  # the table never knew the key
        ({"fingerprint": "fp2", "version": 2, "recent": []}, "fp1", None),  # a newer fingerprint meanwhile decides
        ({"fingerprint": "fp1", "version": 2, "recent": [["r", 0, "updated", 2]]}, "fp1",
         {"fingerprint": None, "version": 2, "recent": [["r", 0, "updated", 2]]}),
    ],
)
def test_forget_rejected(previous: dict[str, Any] | None, rejected: str, expected: dict[str, Any] | None) -> None:
    assert forget_rejected(previous, rejected) == expected


def test_after_a_rejection_the_same_content_is_updated_with_a_higher_version() -> None:
    created = classify(None, "fp1", "run-1", 0)
    forgotten = forget_rejected(created.state, "fp1")
    assert forgotten is not None
    again = classify(forgotten, "fp1", "run-2", 0)
    assert (again.outcome, again.version) == ("updated", 2), "not unchanged: MongoDB does not hold it"


def test_rejected_event_is_small_and_keyed_by_the_posting() -> None:
    change = {"job": {"dedupeKey": "k1"}, "fingerprint": "fp", "version": 3, "runId": "r", "seq": 7}
    event = rejected_event(change, "x" * 10_000)
    assert event["type"] == "rejected" and event["dedupeKey"] == "k1" and len(event["reason"]) == 256
