"""Supervised long-lived tasks: no task of the daemon can end without a decision.

Every long-lived task of the daemon (the journal writer, each instrument supervisor, each
forwarder, the API server, the TLC scheduler, the clock monitor, the systemd notifier) runs
under one :class:`TaskTree`. When such a task raises an exception nobody expected:

1. the exception is logged once, with its traceback (``task failed``);
2. it is journaled as a ``task_failed`` event (component, exception type, message, policy);
3. it shows in the daemon's status (``daq status``, ``/api/status``), ``/healthz`` (a
   problem while the component is down) and ``/metrics`` (``daq_task_failures_total``,
   ``daq_task_up``);
4. the component's declared policy (:data:`POLICIES`) decides what happens next.

Policies:

========================  =========  =================================================================
family                    policy     why
========================  =========  =================================================================
``journal-writer``        exit       The writer owns the only write connection, the chain tails and
                                     the batch in hand; restarting it in-process could commit half a
                                     batch twice or skip one. The daemon stops with exit status
                                     :data:`EXIT_TASK_FAILED` and systemd (``Restart=on-failure``)
                                     starts it again; the journal recovers from disk.
``supervisor``            restart    One instrument: restarting reconnects it; others never notice.
``forwarder``             restart    A forwarder resumes from its cursor in the journal; a batch in
                                     hand is read again and comes out the same.
``api``                   restart    The local API holds no acquisition state; it binds again.
``tlc``                   restart    The scan scheduler only starts scans; scans in flight are
                                     watched and recorded by their own tasks.
``clock``                 restart    The clock monitor compares clocks; a restart re-reads the sync.
``systemd``               restart    The notifier only reports; a restart resumes the pings (the
                                     watchdog catches a notifier that stays down).
``stall-watch``           restart    :class:`StallWatch` only observes the event loop.
========================  =========  =================================================================

Restarts back off from :data:`RESTART_INITIAL_S` doubling (with jitter) up to
:data:`RESTART_CAP_S`; a component that ran :data:`HEALTHY_AFTER_S` without failing starts
again from the initial delay. A task that *returns* when it should run until cancelled is
treated as a failure too (``ended unexpectedly``): a silently finished task is the fault this
module exists to prevent. Cancellation is how the daemon stops tasks and is never a fault.

The run manager has no long-lived task of its own: its trigger runs inside the supervisors
(covered by their policy) and its API calls inside the API's handlers.

Test seam: :func:`fault_point` is called in each component's loop; a component named in
:func:`arm` (or in the environment variable :data:`FAULT_ENV`, comma-separated, read when the
daemon starts) raises :class:`InjectedFault` there once; ``hang:<component>`` makes
:func:`hang_point` block instead (the daemon's stop has one). Nothing else sets them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from daq.backoff import backoff_delay
from daq.logs import get_logger

log = get_logger("daq.supervision")

#: Exit status of a daemon stopped by an ``exit`` policy (``EX_SOFTWARE`` of sysexits.h).
EXIT_TASK_FAILED = 70
RESTART_INITIAL_S = 1.0
RESTART_CAP_S = 30.0
HEALTHY_AFTER_S = 60.0
#: Test seam: components to fail once, comma-separated (``supervisor:dc1,api``).
FAULT_ENV = "DAQ_TEST_FAULTS"


class Policy(enum.StrEnum):
    RESTART = "restart"
    EXIT = "exit"


#: What happens when a task of each family fails (the table in the module docstring).
POLICIES: dict[str, Policy] = {
    "journal-writer": Policy.EXIT,
    "supervisor": Policy.RESTART,
    "forwarder": Policy.RESTART,
    "api": Policy.RESTART,
    "tlc": Policy.RESTART,
    "clock": Policy.RESTART,
    "systemd": Policy.RESTART,
    "stall-watch": Policy.RESTART,
}


class InjectedFault(RuntimeError):
    """Raised by :func:`fault_point` for an armed component (tests only)."""


_armed: set[str] = set()


def arm(*components: str) -> None:
    """Make the next :func:`fault_point` of each component raise (once)."""
    _armed.update(components)


def arm_from_env(environ: dict[str, str] | None = None) -> None:
    value = (os.environ if environ is None else environ).get(FAULT_ENV, "")
    arm(*(c.strip() for c in value.split(",") if c.strip()))


def disarm() -> None:
    _armed.clear()


def fault_point(component: str) -> None:
    """Raise :class:`InjectedFault` if ``component`` is armed; costs one set lookup otherwise."""
    if _armed and component in _armed:
        _armed.discard(component)
        raise InjectedFault(f"fault injected into {component}")


def hang_point(component: str) -> None:
    """Block the calling thread for an hour if ``hang:<component>`` is armed: the worst hang
    (an event loop that never comes back), for tests of the shutdown bound."""
    name = f"hang:{component}"
    if _armed and name in _armed:
        _armed.discard(name)
        log.warning("hang injected", component=component)
        time.sleep(3600)


@dataclasses.dataclass
class TaskRecord:
    """What the tree knows about one supervised component."""

    component: str
    family: str
    policy: Policy
    #: ``running``, ``restarting`` (waiting out the backoff), ``failed`` (exit policy), ``stopped``.
    state: str = "running"
    failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_failure_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "policy": self.policy.value,
            "state": self.state,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure_ns": self.last_failure_ns,
        }


#: Called with (record, exception) after a failure is logged: the daemon journals it.
FaultHook = Callable[[TaskRecord, BaseException], None]


class TaskTree:
    """Runs and watches the daemon's long-lived tasks (see the module docstring).

    ``on_fault`` journals a failure; ``on_fatal`` is called once when an ``exit`` policy
    fires (the daemon stops with :data:`EXIT_TASK_FAILED`). ``time_ns`` stamps failures.
    """

    def __init__(
        self,
        *,
        on_fault: FaultHook | None = None,
        on_fatal: Callable[[TaskRecord], None] | None = None,
        time_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        initial_s: float = RESTART_INITIAL_S,
        cap_s: float = RESTART_CAP_S,
    ):
        self.on_fault = on_fault
        self.on_fatal = on_fatal
        self.time_ns = time_ns
        self.rng = rng or random.Random()
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.records: dict[str, TaskRecord] = {}

    def _record(self, component: str, family: str) -> TaskRecord:
        rec = self.records.get(component)
        if rec is None:
            rec = self.records[component] = TaskRecord(component, family, POLICIES[family])
        rec.state = "running"
        return rec

    def spawn(
        self,
        component: str,
        family: str,
        factory: Callable[[], Coroutine[Any, Any, None]],
        *,
        ended: Callable[[], bool] | None = None,
    ) -> asyncio.Task[None]:
        """Run ``factory()`` as a supervised task named ``component``; a restart policy calls
        ``factory`` again after a failure. Cancel the returned task to stop it; a task that
        stops by itself must say so through ``ended()`` (true once it was asked to end)."""
        rec = self._record(component, family)
        return asyncio.create_task(self._supervise(rec, factory, ended), name=component)

    def watch(
        self, component: str, family: str, task: asyncio.Task[Any], *, expected_end: Callable[[], bool]
    ) -> None:
        """Watch a task started elsewhere (the journal writer). Its end is a failure unless
        cancelled or ``expected_end()`` says it was asked to finish. Only ``exit`` policies
        make sense here: the tree cannot restart what it did not start."""
        rec = self._record(component, family)

        def done(t: asyncio.Task[Any]) -> None:
            if rec.state == "failed":  # already reported (see report_failure)
                return
            if t.cancelled() or (expected_end() and t.exception() is None):
                rec.state = "stopped"
                return
            exc = t.exception() or RuntimeError(f"{component} ended unexpectedly")
            self._failed(rec, exc)
            self._decide_fatal(rec)

        task.add_done_callback(done)

    def report_failure(self, component: str, exc: BaseException, *, logged: bool) -> None:
        """A watched component says it failed for good (the journal's ``on_fatal``). With
        ``logged`` it already logged the traceback itself: the tree does not log it again."""
        rec = self.records[component]
        if rec.state == "failed":
            return
        self._failed(rec, exc, log_traceback=not logged)
        if rec.policy is Policy.EXIT:
            self._decide_fatal(rec)

    async def _supervise(
        self,
        rec: TaskRecord,
        factory: Callable[[], Coroutine[Any, Any, None]],
        ended: Callable[[], bool] | None,
    ) -> None:
        attempt = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    await factory()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(rec, exc)
                else:
                    if ended is not None and ended():
                        return
                    self._failed(rec, RuntimeError(f"{rec.component} ended unexpectedly"))
                if rec.policy is Policy.EXIT:
                    self._decide_fatal(rec)
                    return
                if time.monotonic() - started >= HEALTHY_AFTER_S:
                    attempt = 0
                attempt += 1
                delay = backoff_delay(attempt, self.initial_s, self.cap_s, self.rng)
                rec.state = "restarting"
                log.warning("task restarting", component=rec.component, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
                rec.restarts += 1
                rec.state = "running"
        finally:
            if rec.state in ("running", "restarting"):
                rec.state = "stopped"

    def _failed(self, rec: TaskRecord, exc: BaseException, *, log_traceback: bool = True) -> None:
        rec.failures += 1
        rec.last_error = f"{type(exc).__name__}: {exc}"[:500]
        rec.last_failure_ns = self.time_ns()
        if log_traceback:
            log.error(
                "task failed",
                component=rec.component,
                policy=rec.policy.value,
                failures=rec.failures,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if self.on_fault is not None:
            try:
                self.on_fault(rec, exc)
            except Exception as hook_exc:  # reporting a fault must not become a second one
                log.error("task failure not journaled", component=rec.component, error=repr(hook_exc))

    def _decide_fatal(self, rec: TaskRecord) -> None:
        rec.state = "failed"
        log.critical("daemon stopping: a task without a safe restart failed", component=rec.component)
        if self.on_fatal is not None:
            self.on_fatal(rec)

    # -- views -------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: rec.as_dict() for name, rec in sorted(self.records.items())}

    def problems(self) -> list[str]:
        """Components down now (waiting for a restart, or failed without one)."""
        return [
            f"task {rec.component} {rec.state} after {rec.last_error}"
            for rec in self.records.values()
            if rec.state in ("restarting", "failed")
        ]


class StallWatch:
    """Notices the whole process standing still (SIGSTOP, a paused virtual machine, a host
    that stopped scheduling it, a callback holding the event loop) and reports each stall
    once, as data: ``on_stall(from_ns, until_ns, stalled_s)`` in wall time.

    It wakes every ``tick_s`` and compares the monotonic time that passed with the time it
    slept; a wake-up later than ``threshold_s`` is a stall. Instruments' own timeouts then
    know that the silence was the process's, not the device's.
    """

    def __init__(
        self,
        on_stall: Callable[[int, int, float], None],
        *,
        tick_s: float = 0.25,
        threshold_s: float = 1.0,
    ):
        self.on_stall = on_stall
        self.tick_s = tick_s
        self.threshold_s = threshold_s
        self.stalls = 0
        self.last_stall_s: float | None = None

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            late = now - last - self.tick_s
            if late >= self.threshold_s:
                self.stalls += 1
                self.last_stall_s = round(late, 3)
                until = time.time_ns()
                self.on_stall(until - int(late * 1e9), until, late)
            last = now
            fault_point("stall-watch")

    def status(self) -> dict[str, Any]:
        return {"stalls": self.stalls, "last_stall_s": self.last_stall_s}


def spawn(
    tree: TaskTree | None,
    component: str,
    family: str,
    factory: Callable[[], Coroutine[Any, Any, None]],
    *,
    ended: Callable[[], bool] | None = None,
) -> asyncio.Task[None]:
    """:meth:`TaskTree.spawn` when there is a tree; a plain task for parts used without a
    daemon (a forwarder in a unit test)."""
    if tree is None:
        return asyncio.create_task(factory(), name=component)
    return tree.spawn(component, family, factory, ended=ended)
