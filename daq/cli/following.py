"""Following one of the daemon's live streams from the command line, through restarts.

``daq tail`` (readings) and ``daq tail --alarms`` (alarm transitions) read an NDJSON stream of
the local API until a deadline or forever. When the daemon does not answer or the stream breaks
(a restart), :func:`follow_stream` says so once, waits with the one backoff
(:class:`daq.backoff.Backoff`, ``BACKOFF_INITIAL_S`` doubling to ``BACKOFF_CAP_S``), and
connects again; it says so once more when the stream is back. The command line is synchronous,
so the wait is ``pause`` (``time.sleep``) and the time is read from ``clock``; a test passes a
:class:`~daq.clock.ManualClock` and its ``advance`` to step both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from daq.api.client import ApiUnavailable, stream
from daq.backoff import Backoff
from daq.clock import Clock, SystemClock

BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 5.0
#: Longest silence on the stream before the daemon counts as gone (it sends heartbeats more often).
STREAM_SILENCE_S = 20.0
#: A connection lost this close to the deadline ends the command instead of starting a retry:
#: the shortest read timeout a connection is given, so a retry this late could not read anything.
DEADLINE_SLACK_S = 0.05


def follow_stream(
    api: str,
    handle: Callable[[dict[str, Any]], None],
    *,
    path: str = "/api/stream",
    what: str = "the stream",
    params: Callable[[bool], Sequence[tuple[str, str]]] = lambda down: (),
    deadline: float | None = None,
    err: TextIO = sys.stderr,
    clock: Clock | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Hand every object of the stream at ``path`` to ``handle`` until ``deadline`` (seconds of
    ``clock``'s monotonic time) or forever, reconnecting as needed.

    ``what`` names the stream in messages. ``params(down)`` gives the query of each
    connection (``down``: the previous one was lost, so the caller can ask for what it missed).
    """
    clock = clock if clock is not None else SystemClock()

    def now() -> float:
        return clock.monotonic_ns() / 1e9

    backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_CAP_S)
    down = False
    while deadline is None or now() < deadline:
        # The read timeout bounds silence: never past the deadline, so a quiet stream ends on time.
        timeout = STREAM_SILENCE_S if deadline is None else min(STREAM_SILENCE_S, deadline - now())
        if timeout <= 0:
            return
        try:
            for obj in stream(api, params(down), timeout=max(timeout, DEADLINE_SLACK_S), path=path):
                if down:
                    print(f"daq tail: reconnected to {api}", file=err, flush=True)
                    down = False
                backoff.reset()
                handle(obj)
                if deadline is not None and now() >= deadline:
                    return
            raise ApiUnavailable(f"{api} ended {what}")
        except ApiUnavailable as exc:
            if deadline is not None and now() >= deadline - DEADLINE_SLACK_S:
                return  # the silence was the deadline running out, not a lost daemon
            if not down:
                print(f"daq tail: {exc}; retrying", file=err, flush=True)
                down = True
        delay = backoff.next_delay()
        pause(delay if deadline is None else min(delay, max(0.0, deadline - now())))
