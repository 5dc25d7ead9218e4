"""The one backoff: doubling, capped, jitter only downwards, stepped on the injected clock."""

from __future__ import annotations

import random

import pytest

from daq.backoff import JITTER, Backoff, backoff_delay
from daq.clock import ManualClock


def test_delays_double_to_the_cap_and_jitter_only_shortens() -> None:
    rng = random.Random(7)
    for attempt in range(1, 15):
        exact = min(5.0, 0.2 * 2 ** (attempt - 1))
        assert backoff_delay(attempt, 0.2, 5.0) == pytest.approx(exact)
        jittered = backoff_delay(attempt, 0.2, 5.0, rng)
        assert exact * (1 - JITTER) <= jittered <= exact


def test_reset_starts_again_and_exact_mode_has_no_jitter() -> None:
    b = Backoff(0.5, 4.0, jitter=False)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s <= cap_s"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


async def test_wait_sleeps_on_the_injected_clock() -> None:
    clock = ManualClock()
    start = clock.monotonic_ns()
    b = Backoff(1.0, 8.0, jitter=False)
    slept = [await b.wait(clock) for _ in range(4)]
    assert slept == [1.0, 2.0, 4.0, 8.0]
    assert clock.monotonic_ns() - start == 15_000_000_000
