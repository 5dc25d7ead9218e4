"""Time integrity: the clock's sync state, and clock steps.

Readings are stamped with UTC wall time (which NTP or an operator can step) and ordered by
monotonic time (which never steps). The :class:`ClockMonitor` service (``"clock"``) compares
the two through the injected :class:`~daq.clock.Clock` every ``check_every_s``: when
``wall - monotonic`` moves by more than ``step_threshold_s`` the wall clock was stepped, and a
``clock_step`` audit entry records by how much. The sync state (synchronised or not, from the
kernel's NTP state via ``adjtimex`` or from ``timedatectl``) is audited at start, on every
change, and at least every ``sync_record_every_s``.

With ``flag_unsynchronised``, the :class:`ClockFlag` stage of the reading pipeline marks GOOD
readings UNCERTAIN (``clock_unsynchronised``) while the monitor knows the clock is not
synchronised. It is the last stage (:mod:`daq.pipeline`): the run trigger has seen the
instrument's own value before the flag is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from daq.logs import get_logger
from daq.model import GOOD, Quality, Reading, Reason, iso
from daq.runs.settings import ClockSection
from daq.supervision import fault_point, spawn

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.journal.journal import Journal
    from daq.supervision import TaskTree

log = get_logger("daq.runs.clock")

# adjtimex(2): the return value TIME_ERROR and the status bit STA_UNSYNC mean "not synchronised".
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    """The leading fields of ``struct timex`` (Linux); the rest is padding we never read."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def sync_state_adjtimex() -> dict[str, Any] | None:
    """The kernel's NTP state (read-only: ``modes = 0``), or ``None`` where adjtimex is unavailable."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    synced = state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)
    return {
        "synchronised": synced,
        "source": "adjtimex",
        "maxerror_us": int(tx.maxerror),
        "esterror_us": int(tx.esterror),
    }


def sync_state_timedatectl() -> dict[str, Any] | None:
    """``timedatectl show``'s NTPSynchronized, or ``None`` where it cannot answer."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None
    return {"synchronised": value == "yes", "source": "timedatectl"}


def read_sync_state(source: str) -> dict[str, Any]:
    """The sync state from ``source`` (``auto`` tries adjtimex, then timedatectl)."""
    state: dict[str, Any] | None = None
    if source in ("auto", "adjtimex"):
        state = sync_state_adjtimex()
    if state is None and source in ("auto", "timedatectl"):
        state = sync_state_timedatectl()
    return state or {"synchronised": None, "source": source if source == "none" else "unavailable"}


class ClockFlag:
    """The ``clock`` stage: GOOD readings become UNCERTAIN while the clock is known unsynchronised.

    Off unless ``enabled`` (``[clock] flag_unsynchronised``). :class:`ClockMonitor` keeps
    ``synchronised`` up to date (``None``: not known, nothing is flagged).
    """

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.synchronised: bool | None = None

    def __call__(self, reading: Reading) -> Reading:
        if not self.enabled or self.synchronised is not False or reading.quality is not GOOD:
            return reading
        return dataclasses.replace(reading, quality=Quality.UNCERTAIN, reason=Reason.CLOCK_UNSYNCHRONISED)


class ClockMonitor:
    """The ``"clock"`` service (phase 0). ``check()`` compares the clocks once."""

    name = "clock"
    phase = 0

    def __init__(
        self, settings: ClockSection, *, clock: Clock, journal: Journal, tasks: TaskTree, flag: ClockFlag
    ):
        self.settings = settings
        #: The pipeline's clock stage, which this monitor keeps informed of the sync state.
        self.flag = flag
        self.clock = clock
        self.journal = journal
        self.tasks = tasks
        self._sync: dict[str, Any] = {"synchronised": None, "source": "not read yet"}
        self.steps = 0
        self.last_step: dict[str, Any] | None = None
        self._offset = 0
        self._task: asyncio.Task[None] | None = None
        self._sync_recorded = 0.0
        self._sync_polled = 0.0

    @property
    def sync(self) -> dict[str, Any]:
        """The last sync state read (``synchronised``: true, false or ``None`` for unknown)."""
        return self._sync

    @sync.setter
    def sync(self, state: dict[str, Any]) -> None:
        self._sync = state
        self.flag.synchronised = state.get("synchronised")

    def _now_offset(self) -> tuple[int, int, int]:
        wall, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        return wall, mono, wall - mono

    async def start(self) -> None:
        _, _, self._offset = self._now_offset()
        await self.poll_sync(force=True)
        self._task = spawn(self.tasks, "clock", "clock", self._loop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check(self) -> dict[str, Any] | None:
        """Compare wall and monotonic time; audit and return a step if there was one."""
        wall, mono, offset = self._now_offset()
        delta = offset - self._offset
        if abs(delta) <= self.settings.step_threshold_s * 1e9:
            return None
        self._offset = offset
        self.steps += 1
        step = {
            "step_ns": delta,
            "step_s": delta / 1e9,
            "expected_wall_ns": wall - delta,
            "wall_ns": wall,
            "mono_ns": mono,
            "expected": iso(wall - delta),
            "now": iso(wall),
        }
        self.last_step = step
        self.journal.audit("clock_step", subject="wall clock", detail=step)
        log.warning("clock step", step_s=delta / 1e9)
        return step

    async def poll_sync(self, *, force: bool = False) -> dict[str, Any]:
        """Read the sync state; audit it when it changed, when ``force``d, or when due."""
        state = await asyncio.to_thread(read_sync_state, self.settings.sync_source)
        now = time.monotonic()
        self._sync_polled = now
        changed = state.get("synchronised") != self.sync.get("synchronised")
        due = now - self._sync_recorded >= self.settings.sync_record_every_s
        self.sync = state
        if force or changed or due:
            self._sync_recorded = now
            self.journal.audit("clock_sync", subject="wall clock", detail=state)
        return state

    async def _loop(self) -> None:
        # Paced on the event loop's own clock: the injected clock is what is being checked.
        poll_every = self.settings.check_every_s if self.sync.get("source") == "adjtimex" else 60.0
        while True:
            await asyncio.sleep(self.settings.check_every_s)
            self.check()
            fault_point("clock")
            if time.monotonic() - self._sync_polled >= poll_every:
                await self.poll_sync()

    def status(self) -> dict[str, Any]:
        return {"sync": self.sync, "steps": self.steps, "last_step": self.last_step}
