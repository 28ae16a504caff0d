"""streams.retry: the back-off policy's arithmetic, and the loop run on a fake clock (nothing waits)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from streams.retry import Backoff, Retry, retry


class FakeTime:
    """A clock that only moves when the loop sleeps; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(times: int, error: Exception, result: str = "done") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An operation that raises ``error`` its first ``times`` calls, then returns ``result``; and its call count."""
    calls = [0]

    async def operation() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise error
        return result

    return operation, calls


@pytest.mark.parametrize(("policy", "failures", "expected"), [
    (Backoff(base=0.5, cap=30), 1, 0.5),
    (Backoff(base=0.5, cap=30), 2, 1.0),
    (Backoff(base=0.5, cap=30), 6, 16.0),
    (Backoff(base=0.5, cap=30), 7, 30.0),  # 32 capped
    (Backoff(base=0.5, cap=30), 5000, 30.0),  # no float overflow for a supervisor that retries for days
    (Backoff(base=1.0, cap=60, factor=3), 3, 9.0),
    (Backoff(base=2.0, cap=1.0), 1, 1.0),  # the cap bounds even the first wait
    (Backoff(base=0.5, cap=30, factor=1), 9, 0.5),  # a constant pause
])
def test_the_delay_grows_by_the_factor_up_to_the_cap(policy: Backoff, failures: int, expected: float) -> None:
    assert policy.delay(failures) == pytest.approx(expected)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 8.0), (0.5, 6.0), (0.999, 4.004)])
def test_jitter_lowers_the_delay_by_at_most_its_fraction(rand: float, expected: float) -> None:
    assert Backoff(base=1.0, cap=8.0, jitter=0.5).delay(5, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("policy", "failures", "elapsed", "expected"), [
    (Backoff(base=1.0, attempts=3), 1, 0.0, 1.0),
    (Backoff(base=1.0, attempts=3), 2, 1.0, 2.0),
    (Backoff(base=1.0, attempts=3), 3, 3.0, None),  # the third try was the last
    (Backoff(base=1.0, attempts=1), 1, 0.0, None),  # one try, no retry
    (Backoff(base=1.0, deadline=10.0), 3, 5.0, 4.0),  # 5 + 4 ends within the deadline
    (Backoff(base=1.0, deadline=10.0), 3, 6.5, None),  # 6.5 + 4 would end past it
    (Backoff(base=1.0), 10_000, 1e9, 30.0),  # no limit: retried forever
])
def test_the_policy_gives_up_after_its_attempts_or_before_passing_its_deadline(
    policy: Backoff, failures: int, elapsed: float, expected: float | None
) -> None:
    assert policy.next_delay(failures, elapsed) == expected


@pytest.mark.parametrize("arguments", [{"base": -1.0}, {"factor": 0.5}, {"jitter": 1.5}, {"attempts": 0}, {"cap": -1.0}])
def test_a_policy_that_makes_no_sense_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="back-off|jitter|attempts"):
        Backoff(**arguments)  # type: ignore[arg-type]


async def test_failures_are_retried_with_growing_waits_until_the_operation_answers() -> None:
    fake = FakeTime()
    told: list[Retry] = []
    operation, calls = failing(4, ConnectionError("away"))
    result = await retry(operation, Backoff(base=0.5, cap=2.0), on_retry=told.append, sleep=fake.sleep, clock=fake.clock)
    assert result == "done"
    assert calls[0] == 5
    assert fake.slept == [0.5, 1.0, 2.0, 2.0]
    assert [(r.attempt, r.delay, str(r.error)) for r in told] == [(1, 0.5, "away"), (2, 1.0, "away"), (3, 2.0, "away"),
                                                                 (4, 2.0, "away")]


async def test_an_error_that_is_not_retryable_passes_through_at_once() -> None:
    fake = FakeTime()
    told: list[Retry] = []
    operation, calls = failing(5, KeyError("bad document"))
    with pytest.raises(KeyError, match="bad document"):
        await retry(operation, Backoff(), retryable=lambda exc: isinstance(exc, ConnectionError), on_retry=told.append,
                    sleep=fake.sleep, clock=fake.clock)
    assert calls[0] == 1
    assert fake.slept == []
    assert told == []


async def test_the_last_failure_the_policy_allows_is_raised_as_it_is() -> None:
    fake = FakeTime()
    error = ConnectionError("still away")
    operation, calls = failing(10, error)
    with pytest.raises(ConnectionError) as raised:
        await retry(operation, Backoff(base=1.0, attempts=3), sleep=fake.sleep, clock=fake.clock)
    assert raised.value is error
    assert calls[0] == 3
    assert fake.slept == [1.0, 2.0]


async def test_no_retry_is_started_that_would_end_past_the_deadline() -> None:
    fake = FakeTime()
    operation, calls = failing(10, TimeoutError())
    with pytest.raises(TimeoutError):
        await retry(operation, Backoff(base=1.0, deadline=5.0), sleep=fake.sleep, clock=fake.clock)
    assert fake.slept == [1.0, 2.0]  # a wait of 4 after 3 s would end at 7
    assert calls[0] == 3


async def test_jitter_is_drawn_from_the_random_source_given() -> None:
    fake = FakeTime()
    operation, _ = failing(2, OSError())
    await retry(operation, Backoff(base=4.0, jitter=0.5), sleep=fake.sleep, clock=fake.clock, rand=lambda: 0.5)
    assert fake.slept == [3.0, 6.0]


async def test_cancellation_during_the_wait_is_not_swallowed() -> None:
    started = asyncio.Event()
    attempts = [0]

    async def away() -> None:
        attempts[0] += 1
        raise ConnectionError("away")

    async def sleep(_seconds: float) -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(retry(away, Backoff(), sleep=sleep))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts[0] == 1


async def test_cancellation_of_an_attempt_is_not_retried_even_when_everything_is_retryable() -> None:
    entered = asyncio.Event()
    fake = FakeTime()

    async def hangs() -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(retry(hangs, Backoff(), retryable=lambda _exc: True, sleep=fake.sleep, clock=fake.clock))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.slept == []
