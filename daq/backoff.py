"""The one backoff: capped doubling with downward jitter, waited on an injected clock.

Every retry loop of the project (an instrument's reconnect, a forwarder's write, a supervised
task's restart, ``daq tail`` and ``daq tail --alarms`` re-attaching to the daemon, the local
API's accept loop out of descriptors) uses
:class:`Backoff`, so they all back off alike and a test steps them with a
:class:`~daq.clock.ManualClock` instead of sleeping.

Jitter only ever shortens a delay (by up to :data:`JITTER`): a cell full of instruments or a
fleet of forwarders that lost the same server do not retry in lockstep, and no delay exceeds
its cap, which is the figure operators are told.
"""

from __future__ import annotations

import random

from daq.clock import Clock

JITTER = 0.2
"""The largest fraction a delay is shortened by."""


def backoff_delay(attempt: int, initial_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): ``initial_s`` doubling per attempt up to
    ``cap_s``, then shortened by up to :data:`JITTER` when ``rng`` is given."""
    base = min(cap_s, initial_s * (2.0 ** max(0, attempt - 1)))
    if rng is None:
        return float(base)
    return float(base * rng.uniform(1.0 - JITTER, 1.0))


class Backoff:
    """Successive retry delays of one loop.

    :meth:`next_delay` returns the next delay and counts an attempt; :meth:`reset` starts again
    from ``initial_s`` (after a success); :meth:`wait` sleeps the next delay on ``clock``.
    ``jitter=False`` gives exact delays (for a wait the operator was promised, such as "retrying
    at the cap").
    """

    def __init__(
        self,
        initial_s: float,
        cap_s: float,
        *,
        rng: random.Random | None = None,
        jitter: bool = True,
    ) -> None:
        if not 0.0 < initial_s <= cap_s:
            raise ValueError(f"backoff needs 0 < initial_s <= cap_s, got {initial_s} and {cap_s}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.rng = rng if rng is not None else random.Random()
        self.jitter = jitter
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one attempt."""
        self.attempt += 1
        return backoff_delay(self.attempt, self.initial_s, self.cap_s, self.rng if self.jitter else None)

    def reset(self) -> None:
        """Start again from ``initial_s`` (the operation succeeded or ran healthy long enough)."""
        self.attempt = 0

    async def wait(self, clock: Clock) -> float:
        """Sleep the next delay on ``clock``; returns the delay slept."""
        delay = self.next_delay()
        await clock.sleep(delay)
        return delay
