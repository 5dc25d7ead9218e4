"""Stopping within a bound: each shutdown step gets what is left of the time, and a
last-resort exit ends the process when the bound runs out, whatever hangs.

:class:`ShutdownSteps` runs the daemon's stop steps one after the other (:meth:`step`): a step
that fails or overruns is logged and noted in ``unfinished`` (audited at ``daemon_stop``), and
the next one runs. :class:`HardExit` is the timer started by SIGTERM or SIGINT (a thread, so a
blocked event loop cannot hold it up) that exits the process when the bound is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from daq.logs import get_logger
from daq.supervision import EXIT_TASK_FAILED

log = get_logger("daq.daemon")

#: The longest a single shutdown step (one service's stop, the last commit) may take.
STEP_CAP_S = 5.0


class ShutdownSteps:
    """The steps of one shutdown, bounded by ``bound_s`` from the moment it is made."""

    def __init__(self, bound_s: float, unfinished: dict[str, Any]):
        self.bound_s = bound_s
        self.started = time.monotonic()
        # A second in hand for the audit entry and the journal's last commit.
        self.deadline = self.started + max(bound_s * 0.5, bound_s - 1.0)
        #: Steps that failed or ran out of time, by name (shared with the daemon's audit).
        self.unfinished = unfinished

    def left(self, cap: float | None = None) -> float:
        """Seconds left for the steps (at most ``cap``)."""
        remaining = max(0.0, self.deadline - time.monotonic())
        return remaining if cap is None else min(cap, remaining)

    def close_s(self) -> float:
        """What the journal's close may take: the rest of the whole bound, less a margin."""
        return max(0.5, self.started + self.bound_s - 0.2 - time.monotonic())

    async def step(self, name: str, aw: Awaitable[Any], timeout_s: float) -> bool:
        """Await one step for at most ``timeout_s``; a step that fails or overruns is logged
        and noted in :attr:`unfinished`, and ``False`` returned."""
        try:
            await asyncio.wait_for(aw, max(0.0, timeout_s))
        except TimeoutError:
            log.error("shutdown step timed out", step=name, timeout_s=round(timeout_s, 3))
            self.unfinished[name] = "timed out"
            return False
        except Exception as exc:
            log.error("shutdown step failed", step=name, error=repr(exc))
            self.unfinished[name] = repr(exc)[:200]
            return False
        return True


class HardExit:
    """Exits the process ``bound_s`` after :meth:`arm`, unless :meth:`cancel` came first.

    ``describe`` gives what the critical log line reports (what was left uncommitted or
    unfinished) at that moment.
    """

    def __init__(self, bound_s: float, describe: Callable[[], dict[str, Any]]):
        self.bound_s = bound_s
        self.describe = describe
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start the timer (once; later calls do nothing)."""
        if self._timer is not None:
            return
        timer = threading.Timer(self.bound_s, self._exit_now)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _exit_now(self) -> None:
        log.critical(
            "shutdown exceeded its bound; exiting now", shutdown_timeout_s=self.bound_s, **self.describe()
        )
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(EXIT_TASK_FAILED)
