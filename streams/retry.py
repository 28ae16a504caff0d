"""The one retry loop: exponential back-off with a cap, optional jitter, a number of attempts or a deadline.

The policy (:class:`Backoff`) is pure arithmetic, so tests check delays without waiting; :func:`retry`
is the loop around it, with the sleep, the clock and the random source passed in. Only ``Exception``
is ever caught: a cancelled task (``asyncio.CancelledError``) stops at once, whatever the policy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after each failed attempt, and when to stop trying.

    The wait after failure ``n`` (1-based) is ``base * factor ** (n - 1)``, at most ``cap``, then
    lowered by up to ``jitter`` of itself (so processes that failed together do not retry together).
    ``attempts`` counts every try, the first included; ``deadline`` is in seconds since the first try,
    and no retry is started whose wait would end past it. ``None`` means no such limit.
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.0
    attempts: int | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError(f"back-off needs base >= 0, cap >= 0, factor >= 1: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction of the delay, 0 to 1: {self.jitter}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be >= 1: {self.attempts}")

    def delay(self, failures: int, rand: float = 0.0) -> float:
        """The wait after ``failures`` failed attempts; ``rand`` in [0, 1) draws the jitter."""
        try:
            grown = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        except OverflowError:  # a retry-forever caller after ~1,000 failures: long past the cap
            grown = self.cap
        return grown * (1 - self.jitter * rand)

    def next_delay(self, failures: int, elapsed: float, rand: float = 0.0) -> float | None:
        """The wait before the next attempt, or None when the policy gives up after ``failures`` failures."""
        if self.attempts is not None and failures >= self.attempts:
            return None
        wait = self.delay(failures, rand)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait


@dataclass(frozen=True, slots=True)
class Retry:
    """What ``on_retry`` is told: the attempt that failed (1-based), its error, the wait before the next one."""

    attempt: int
    error: Exception
    delay: float


def always(_exc: Exception) -> bool:
    """Every exception is worth another try (a supervisor that must outlive outages)."""
    return True


async def retry(
    operation: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    retryable: Callable[[Exception], bool] = always,
    on_retry: Callable[[Retry], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """``await operation()`` until it returns, waiting as ``policy`` says after each retryable failure.

    A failure that is not ``retryable``, or the last one the policy allows, is raised as it is.
    ``on_retry`` (typically a log line) runs before each wait.
    """
    started = clock()
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            failures += 1
            if not retryable(exc):
                raise
            wait = policy.next_delay(failures, clock() - started, rand())
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(Retry(failures, exc, wait))
        await sleep(wait)
