"""Injected time.

Everything that stamps, schedules or backs off takes a :class:`Clock`, so tests can step
time (and the wall clock separately from the monotonic one) without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Two clocks and a way to wait.

    ``time_ns`` is UTC wall time in nanoseconds since the epoch (it can step);
    ``monotonic_ns`` never goes backwards. ``sleep`` waits on the monotonic clock.
    """

    def time_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks of the machine."""

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to; ``sleep`` yields and advances time.

    ``step_wall`` moves the wall clock alone, as NTP stepping the system clock would.
    """

    def __init__(self, wall_ns: int = 1_767_225_600_000_000_000, mono_ns: int = 1_000_000_000):
        self._wall = wall_ns
        self._mono = mono_ns

    def time_ns(self) -> int:
        return self._wall

    def monotonic_ns(self) -> int:
        return self._mono

    def advance(self, seconds: float) -> None:
        delta = int(seconds * 1e9)
        self._wall += delta
        self._mono += delta

    def step_wall(self, seconds: float) -> None:
        self._wall += int(seconds * 1e9)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
