"""Running under systemd: readiness, the watchdog, status lines and journald log priorities.

The notification protocol is written here directly (sd_notify(3)): one datagram of
newline-separated ``KEY=VALUE`` assignments sent over an ``AF_UNIX`` ``SOCK_DGRAM`` socket to
the address in ``$NOTIFY_SOCKET``, which is either a file-system path or, when it starts with
``@``, a name in the abstract namespace (the ``@`` stands for the leading NUL byte). No
binding is needed and none is used.

:class:`SystemdNotifier` is the daemon service (``name = "systemd"``, phase 2, so it starts
last) that tells the service manager:

- ``READY=1`` once the journal is open (recovered and migrated) and every supervisor has
  been started, since phase-2 services start after both;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, but only while the pipeline makes progress
  (:class:`PipelineHealth`): when data has waited with no successful commit for a whole
  watchdog period (a hung or dead writer, commits that keep failing) the pings stop, and
  systemd restarts the service after ``WatchdogSec=``. A blocked event loop cannot run the
  ping task at all;
- ``STATUS=`` with a one-line summary at every tick (``systemctl status`` shows it);
- ``STOPPING=1`` first thing on shutdown, before the journal is flushed and closed.

Notifications never raise: a service manager that went away must not take acquisition down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daq.logs import get_logger
from daq.supervision import fault_point, spawn

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.context import AlarmControl, ServiceContext
    from daq.journal.journal import Journal
    from daq.status import StatusBoard
    from daq.supervision import TaskTree

log = get_logger("daq.systemd")

#: Seconds between ``STATUS=`` updates when systemd asked for no watchdog.
STATUS_INTERVAL_S = 5.0


#: journald's priorities (syslog(3)) for structlog's level names.
def notify_address(value: str) -> str | bytes:
    """The socket address for a ``$NOTIFY_SOCKET`` value; raises :class:`ValueError` for a
    value that is neither an absolute path nor an abstract name (``@name``)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    raise ValueError(f"NOTIFY_SOCKET={value!r}: expected an absolute path or @abstract-name")


class Notifier:
    """A datagram socket to the service manager. :meth:`send` never raises; it returns
    whether the datagram left, and a failure is logged once per run of failures."""

    def __init__(self, address: str | bytes):
        self.address = address
        self.sent = 0
        self.failed = 0
        self._failing = False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        self._sock: socket.socket | None = sock

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or ``None`` when it is unset or unusable."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        if not value:
            return None
        try:
            return cls(notify_address(value))
        except ValueError as exc:
            log.warning("systemd notifications disabled", error=str(exc))
            return None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` assignments (``send(READY=1, STATUS="...")``) in one datagram."""
        if self._sock is None:
            return False
        message = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            self.failed += 1
            if not self._failing:
                self._failing = True
                log.warning("systemd notification failed", error=str(exc), message=message[:200])
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notifications delivered again")
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def notify(environ: Mapping[str, str] | None = None, **fields: str | int) -> bool:
    """One-shot ``sd_notify``: send ``fields`` to ``$NOTIFY_SOCKET`` if it is set."""
    notifier = Notifier.from_env(environ)
    if notifier is None:
        return False
    try:
        return notifier.send(**fields)
    finally:
        notifier.close()


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """``$WATCHDOG_USEC`` in seconds, or ``None`` when no watchdog applies to this process
    (unset, not a positive integer, or ``$WATCHDOG_PID`` names another process)."""
    env = os.environ if environ is None else environ
    usec, wpid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if wpid and (not wpid.isdigit() or int(wpid) != (os.getpid() if pid is None else pid)):
        return None
    return int(usec) / 1e6


class PipelineHealth:
    """Decides whether the journal pipeline makes progress, from counters it is shown.

    Stalled when data has waited uncommitted while no commit succeeded for ``stall_after_s``,
    whatever the cause: a writer hung in a commit, a writer task that died, or commits that
    keep failing (the journal's ``error``, named in the reason). A single failed commit that
    a retry repairs within the period is not a stall, and an idle journal with nothing
    waiting is healthy: there is no progress to make. :meth:`check` returns ``None`` when
    healthy, else the reason; it is fed the monotonic time so tests can step it.
    """

    def __init__(self, stall_after_s: float):
        self.stall_after_ns = int(stall_after_s * 1e9)
        self._commits: int | None = None
        self._progress_ns = 0

    def check(self, now_ns: int, *, commits: int, uncommitted: int, error: str | None) -> str | None:
        if commits != self._commits or uncommitted == 0:
            self._commits = commits
            self._progress_ns = now_ns
        stalled_ns = now_ns - self._progress_ns
        if stalled_ns < self.stall_after_ns:
            return None
        reason = f"journal stalled: no commit for {stalled_ns / 1e9:.1f} s with {uncommitted} waiting"
        return f"{reason} (last error: {error})" if error is not None else reason


class SystemdNotifier:
    """The daemon service that keeps systemd informed (see the module docstring)."""

    name = "systemd"
    phase = 2

    def __init__(
        self,
        notifier: Notifier,
        *,
        watchdog_s: float | None,
        status_interval_s: float = STATUS_INTERVAL_S,
        clock: Clock,
        journal: Journal,
        tasks: TaskTree,
        board: StatusBoard,
        alarms: AlarmControl | None = None,
    ):
        self.clock = clock
        self.alarms = alarms
        self.journal = journal
        self.tasks = tasks
        self.board = board
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        #: Half the watchdog period, as sd_watchdog_enabled(3) recommends.
        self.interval_s = watchdog_s / 2 if watchdog_s else status_interval_s
        self.health = PipelineHealth(stall_after_s=watchdog_s or status_interval_s)
        self.pings = 0
        self.withheld: str | None = None
        self.status_line = ""
        self._task: asyncio.Task[None] | None = None
        self._last_mono_ns = 0
        self._last_committed = 0

    async def start(self) -> None:
        self._last_mono_ns = self.clock.monotonic_ns()
        self._last_committed = self.journal.readings_committed
        self.status_line = self._summary(None)
        self.notifier.send(READY=1, STATUS=self.status_line)
        log.info("systemd notified ready", watchdog_s=self.watchdog_s)
        self._task = spawn(self.tasks, "systemd", "systemd", self._loop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.notifier.send(STOPPING=1, STATUS="stopping: committing the journal")
        self.notifier.close()

    def status(self) -> dict[str, Any]:
        return {
            "watchdog_s": self.watchdog_s,
            "pings": self.pings,
            "withheld": self.withheld,
            "status": self.status_line,
            "notifications_failed": self.notifier.failed,
        }

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.interval_s)
            self.tick()
            fault_point("systemd")

    def tick(self) -> None:
        """One round: judge progress, update the status line, ping if healthy."""
        journal = self.journal
        now = self.clock.monotonic_ns()
        reason = self.health.check(
            now, commits=journal.commits, uncommitted=journal.uncommitted, error=journal.error
        )
        if (reason is None) != (self.withheld is None):  # log the change, not every tick
            if reason is not None:
                log.error("watchdog pings withheld", reason=reason)
            else:
                log.info("watchdog pings resumed")
        self.withheld = reason
        self.status_line = self._summary(reason, now)
        if reason is None and self.watchdog_s:
            self.notifier.send(WATCHDOG=1, STATUS=self.status_line)
            self.pings += 1
        else:
            self.notifier.send(STATUS=self.status_line)

    def _summary(self, problem: str | None, now_ns: int | None = None) -> str:
        up, configured = self.board.connected()
        committed = self.journal.readings_committed
        backlog = self.journal.uncommitted
        rate = 0.0
        if now_ns is not None and now_ns > self._last_mono_ns:
            rate = (committed - self._last_committed) * 1e9 / (now_ns - self._last_mono_ns)
            self._last_mono_ns, self._last_committed = now_ns, committed
        line = f"{up}/{configured} instruments connected, {rate:.1f} readings/s, backlog {backlog}"
        if self.alarms is not None:
            active = sum(self.alarms.counts().values())
            if active:
                line += f", {active} alarm(s) active ({self.alarms.unacknowledged()} unacknowledged)"
        return f"{problem}; {line}" if problem else line


def service(ctx: ServiceContext) -> SystemdNotifier | None:
    """The service factory: a notifier when ``$NOTIFY_SOCKET`` is set, else ``None``."""
    notifier = Notifier.from_env()
    if notifier is None:
        return None
    return SystemdNotifier(
        notifier,
        watchdog_s=watchdog_interval_s(),
        clock=ctx.clock,
        journal=ctx.journal,
        tasks=ctx.tasks,
        board=ctx.status,
        alarms=ctx.alarms,
    )


# -- journald priorities ----------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
