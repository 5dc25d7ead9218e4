"""One supervisor per instrument: connect, poll or stream, reconnect, and record every gap.

The supervisor is the only place that waits, retries or backs off: it owns each poll's
deadline, the silence limit a streaming or subscription driver declares, and the periodic
duties a driver lists (OPC UA node retries, nodes read on a grid beside a subscription).
Whatever happens to one instrument stays inside its supervisor: errors are journaled as BAD
readings and events, and the task keeps going until it is cancelled.

The module is longer than most (about 450 lines) because those policies are one state
machine per instrument (connected or not, the failed-attempt count, the poll grid, the
silence window, the duties' schedule) that every path reads and changes; the backoff
(:mod:`daq.backoff`), the links (:mod:`daq.transport`) and the readings' way on
(:mod:`daq.pipeline`) live elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import math
import random
from collections.abc import Callable
from typing import Any

from daq.backoff import backoff_delay
from daq.clock import Clock
from daq.errors import ConnectError, DeviceError, DriverError, ProtocolError, ReadTimeout
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.model import BAD, SERIES_ATTRS, DeviceInfo, EventKind, InstrumentEvent, Quality, Reading, Reason
from daq.supervision import fault_point
from daq.transport import overdue
from drivers.base import Capability, Deadline, Driver, Duty

log = get_logger("daq.supervisor")

#: While an instrument stays unreachable, one "still unavailable" line at most this often.
UNAVAILABLE_REMINDER_S = 60.0


class State(enum.Enum):
    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


def _raise_if_cancelled() -> None:
    """Honour a cancellation that a library swallowed.

    On Python 3.11, ``asyncio.wait_for`` (used inside pymodbus) returns the result instead of
    raising when a cancel arrives just as its future completes; the task then carries on with
    ``cancelling()`` set. Checking it on every loop turn makes the daemon's stop reliable.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class DutyGrid:
    """When each of a driver's duties is next due, on a fixed grid from connect."""

    def __init__(self, duties: list[Duty], connected_ns: int):
        self.duties = duties
        self.due = [connected_ns + int(d.first_s * 1e9) for d in duties]

    def next_due(self) -> int | None:
        return min(self.due, default=None)

    def take_due(self, now: int) -> list[Duty]:
        out = []
        for i, duty in enumerate(self.duties):
            if now >= self.due[i]:
                every = int(duty.every_s * 1e9)
                # The next slot after now: slots that passed while something else ran are skipped.
                self.due[i] += ((now - self.due[i]) // every + 1) * every
                out.append(duty)
        return out


class Supervisor:
    """Owns one driver. ``offset_s`` staggers polled instruments across their period."""

    def __init__(
        self,
        driver: Driver,
        journal: Journal,
        clock: Clock,
        *,
        offset_s: float = 0.0,
        rng: random.Random | None = None,
        pipeline: Callable[[Reading], Reading] | None = None,
    ):
        self.driver = driver
        self.config = driver.config
        self.name = driver.name
        #: This supervisor's name in the daemon's task tree (daq.supervision).
        self.component = f"supervisor:{driver.name}"
        self.journal = journal
        self.clock = clock
        self.offset_s = offset_s
        self.rng = rng or random.Random()
        #: Every reading passes this before it is journaled (:mod:`daq.pipeline`; the daemon's
        #: run attribution, equilibrium gate, clock flag); by default readings pass unchanged.
        self.pipeline = pipeline
        #: Held around every driver call, so a write never interleaves with a poll.
        self.io_lock = asyncio.Lock()
        self.state = State.STARTING
        self.device_info: DeviceInfo | None = None
        self.reconnects = 0
        self.connects = 0
        self.readings = 0
        self.parse_errors = 0
        self.timeouts = 0
        self.overruns = 0
        #: How late each recent poll started against its grid slot (the poll jitter), in ns.
        self.poll_lateness_ns: collections.deque[int] = collections.deque(maxlen=10_000)
        self.last_error: str | None = None
        self.last_values: dict[str, Reading] = {}
        self._known_channels: dict[str, str] = dict(driver.channels())
        #: While the instrument stays unreachable, retries log at debug level and a reminder at
        #: most every :data:`UNAVAILABLE_REMINDER_S` (monotonic ns of the last one), so an
        #: unplugged instrument does not print a connecting/backoff pair every few seconds.
        self._retrying = False
        self._reminded_ns = 0
        self._failed_attempts = 0
        #: Set when the driver's silence limit changed while a wait was under way.
        self._rearm = False

    # -- journaling helpers -----------------------------------------------------------

    def _event(self, kind: str, detail: dict[str, Any] | None = None, raw: bytes | None = None) -> None:
        self.journal.event(
            InstrumentEvent(
                instrument=self.name,
                kind=kind,
                ts_ns=self.clock.time_ns(),
                mono_ns=self.clock.monotonic_ns(),
                detail=detail,
                raw=raw,
            )
        )

    def _store(self, readings: list[Reading]) -> None:
        for made in readings:
            r = made if self.pipeline is None else self.pipeline(made)
            self.journal.append(r)
            self.last_values[r.channel] = r
            self._known_channels.setdefault(r.channel, r.unit)
        self.readings += len(readings)

    def _gap(
        self,
        reason: str,
        message: str,
        channels: list[str] | None = None,
        raw: bytes | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write one BAD reading per channel: the gap is recorded, never interpolated.
        ``extra`` goes into each record's attrs (the span of missed polls)."""
        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        names = channels if channels is not None else list(self._known_channels)
        self._store(
            [
                Reading(
                    instrument=self.name,
                    channel=ch,
                    value=None,
                    unit=self._known_channels.get(ch, ""),
                    quality=Quality.BAD,
                    reason=reason,
                    acq_ns=now,
                    mono_ns=mono,
                    raw=raw,
                    attrs={**self._series_attrs(ch), **(extra or {}), "error": message[:500]},
                )
                for ch in names
            ]
        )

    def _series_attrs(self, channel: str) -> dict[str, Any]:
        """The series-naming attributes (the nuclide of a calibrator) of the channel's last
        reading: the gap belongs to the series it interrupts."""
        last = self.last_values.get(channel)
        if last is None or not last.attrs:
            return {}
        return {k: last.attrs[k] for k in SERIES_ATTRS if last.attrs.get(k) is not None}

    def _set_state(self, state: State, **fields: Any) -> None:
        if state is not self.state:
            self.state = state
            quiet = self._retrying and state in (State.CONNECTING, State.BACKOFF)
            (log.debug if quiet else log.info)(
                "instrument state", instrument=self.name, state=state.value, **fields
            )

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise until cancelled; never raises for instrument trouble."""
        attempt = 0
        try:
            while True:
                _raise_if_cancelled()
                self._set_state(State.CONNECTING)
                try:
                    async with asyncio.timeout(self.config.connect_timeout_s):
                        self.device_info = await self.driver.connect()
                except (DriverError, OSError, TimeoutError) as exc:
                    message = str(exc) or f"no connection within {self.config.connect_timeout_s:g} s"
                    await self._after_failure(Reason.CONNECT_FAILED, message, attempt == 0)
                    attempt += 1
                    await self._backoff(attempt)
                    continue
                self.connects += 1
                if attempt:
                    self.reconnects += 1
                attempt = 0
                self._retrying = False
                self.last_error = None
                self._event(EventKind.CONNECTED, {"device": self.device_info.as_dict()})
                self._set_state(State.CONNECTED, device=self.device_info.model)
                try:
                    if self.driver.capability is Capability.POLLED:
                        await self._poll()
                    else:
                        await self._stream()
                except (ConnectError, ReadTimeout, OSError, TimeoutError, DriverError) as exc:
                    reason = (
                        Reason.TIMEOUT if isinstance(exc, ReadTimeout | TimeoutError) else Reason.DISCONNECTED
                    )
                    await self._after_failure(reason, str(exc) or type(exc).__name__, True)
                    attempt = 1
                    await self._backoff(attempt)
        finally:
            self._set_state(State.STOPPED)
            await self.driver.close()

    async def _after_failure(self, reason: str, message: str, first: bool) -> None:
        # Recorded before close(): closing a hung link can itself take a timeout, and the gap
        # and the event are stamped when the failure was detected, not when close gave up.
        self._failed_attempts += 1
        now = self.clock.monotonic_ns()
        if first:
            self._event(EventKind.DISCONNECTED, {"reason": reason, "error": message})
            log.warning("instrument unavailable", instrument=self.name, reason=reason, error=message)
            self._retrying, self._reminded_ns, self._failed_attempts = True, now, 1
        elif now - self._reminded_ns >= UNAVAILABLE_REMINDER_S * 1e9:
            self._reminded_ns = now
            log.warning(
                "instrument still unavailable",
                instrument=self.name,
                reason=reason,
                error=message,
                attempts=self._failed_attempts,
            )
        self.last_error = message
        self._gap(reason, message)
        await self.driver.close()

    async def _backoff(self, attempt: int) -> None:
        delay = backoff_delay(attempt, self.config.backoff_initial_s, self.config.backoff_cap_s, self.rng)
        self._set_state(State.BACKOFF)
        if attempt == 1:
            self._event(EventKind.RECONNECTING, {"delay_s": round(delay, 3)})
        await self.clock.sleep(delay)

    def _bad_frame(self, exc: ProtocolError) -> None:
        self.parse_errors += 1
        self._event(EventKind.PARSE_ERROR, {"reason": exc.reason}, raw=exc.raw)
        # The raw frame goes with the BAD reading(s), so QA can see exactly what arrived.
        self._gap(Reason.PARSE_ERROR, exc.reason, [exc.channel] if exc.channel else None, exc.raw)

    def _device_error(self, exc: DeviceError) -> None:
        self._event(EventKind.DEVICE_ERROR, {"error": str(exc), "code": exc.code})
        self._gap(Reason.DEVICE_ERROR, f"{exc} (code {exc.code})" if exc.code else str(exc), exc.channels)

    async def _read_once(self, deadline: Deadline | None = None) -> list[Reading] | None:
        """One driver read (a poll by ``deadline``); frame and device errors are recorded and
        do not drop the link."""
        try:
            async with self.io_lock:
                readings = await self.driver.read(deadline)
        except ProtocolError as exc:
            self._bad_frame(exc)
        except DeviceError as exc:
            self._device_error(exc)
        else:
            # A polled driver with several channels reports a bad frame of one channel as that
            # channel's BAD parse_error reading (the others still count); it gets the same
            # event and counter as a frame that failed the whole read.
            for r in readings:
                if r.quality is BAD and r.reason == Reason.PARSE_ERROR:
                    self.parse_errors += 1
                    error = r.attrs.get("error") if r.attrs else None
                    self._event(EventKind.PARSE_ERROR, {"reason": error, "channel": r.channel}, raw=r.raw)
            return readings
        return None

    async def _stream(self) -> None:
        """Read a streaming or subscription driver, owning its silence limit and duties.

        Each wait for ``read()`` is bounded by the earlier of the driver's silence limit
        (counted from the last time ``read()`` returned) and the next duty; a duty coming due
        cancels the wait (``read()`` may be cancelled while waiting), runs, and the wait
        resumes with the same silence deadline. A silence past the limit is a ``timeout``
        gap and a reconnect, unless the timer fired late because the process stood still."""
        driver = self.driver
        loop = asyncio.get_running_loop()
        duties = DutyGrid(driver.duties(), self.clock.monotonic_ns())
        heard = self.clock.monotonic_ns()
        waiting: list[asyncio.Timeout] = []

        def rearm() -> None:
            # The limit changed (a scan started): wake the wait so the limit is asked again.
            self._rearm = True
            for cm in waiting:
                cm.reschedule(loop.time())

        self._rearm = False
        driver.on_cadence_change = rearm
        try:
            while True:
                _raise_if_cancelled()
                await self._run_duties(duties)
                if self._rearm:
                    self._rearm, heard = False, self.clock.monotonic_ns()
                limit_s = driver.silence_limit_s()
                silent_at = None if limit_s is None else heard + int(limit_s * 1e9)
                wake_at = min((t for t in (silent_at, duties.next_due()) if t is not None), default=None)
                wait_s = None if wake_at is None else max(0.0, (wake_at - self.clock.monotonic_ns()) / 1e9)
                started = loop.time()
                done = False
                readings: list[Reading] | None = None
                try:
                    async with asyncio.timeout(wait_s) as cm:
                        waiting.append(cm)
                        readings = await self._read_once()
                        done = True
                except TimeoutError:
                    if not cm.expired():
                        raise
                finally:
                    waiting.clear()
                if done:
                    heard = self.clock.monotonic_ns()
                    if readings:
                        self._store(readings)
                    fault_point(self.component)
                    continue
                if self._rearm:
                    continue
                if wait_s is not None and overdue(loop, started, wait_s):
                    # The process stood still (SIGSTOP, a paused host): that time was not the
                    # instrument's silence. What it sent meanwhile waits in the link.
                    heard = self.clock.monotonic_ns()
                    continue
                if limit_s is not None and wake_at == silent_at:
                    raise ReadTimeout(driver.silenced(limit_s))
        finally:
            driver.on_cadence_change = None

    async def _run_duties(self, duties: DutyGrid) -> None:
        """Run the driver's duties that are due, each within its own deadline; readings are
        stored, frame and device errors recorded, a timeout is the link's (it reconnects)."""
        for duty in duties.take_due(self.clock.monotonic_ns()):
            deadline = Deadline.after(self.clock, duty.timeout_s)
            try:
                async with asyncio.timeout(duty.timeout_s):
                    async with self.io_lock:
                        readings = await duty.call(deadline)
            except TimeoutError as exc:
                raise ReadTimeout(f"{self.name}: {duty.name}: no answer within {duty.timeout_s:g} s") from exc
            except ProtocolError as exc:
                self._bad_frame(exc)
                continue
            except DeviceError as exc:
                self._device_error(exc)
                continue
            if readings:
                self._store(readings)

    async def _poll(self) -> None:
        period_ns = int(self.config.period_s * 1e9)
        timeout_s = self.config.timeout_s
        # Poll on a fixed monotonic grid: the period never drifts with read time, and
        # offset_s spreads instruments so they are not all woken at the same instant.
        start = self.clock.monotonic_ns() + int(self.offset_s * 1e9)
        duties = DutyGrid(self.driver.duties(), self.clock.monotonic_ns())
        k = 0
        consecutive_timeouts = 0
        loop = asyncio.get_running_loop()
        while True:
            _raise_if_cancelled()
            due = start + k * period_ns
            wait = (due - self.clock.monotonic_ns()) / 1e9
            if wait > 0:
                await self.clock.sleep(wait)
            self.poll_lateness_ns.append(self.clock.monotonic_ns() - due)
            started = loop.time()
            readings: list[Reading] | None = None
            try:
                # One budget for the whole poll, from here: the driver sizes its requests from
                # the deadline, and this timeout is the one that enforces it.
                deadline = Deadline.after(self.clock, timeout_s)
                async with asyncio.timeout(timeout_s):
                    readings = await self._read_once(deadline)
            except (ReadTimeout, TimeoutError) as exc:
                if overdue(loop, started, timeout_s):
                    # The process stood still during the poll: the silence was its own, not
                    # the device's. The slot is recorded as missed, not as a device timeout.
                    self._missed_polls(due, due, 1, "the process stood still during the poll")
                else:
                    self.timeouts += 1
                    consecutive_timeouts += 1
                    why = str(exc) or f"no reply within {timeout_s:g} s"
                    if consecutive_timeouts >= self.config.max_consecutive_timeouts:
                        # One gap record for this poll: the reconnect that follows writes it
                        # (reason timeout), instead of a second BAD row per channel beside this one.
                        raise ReadTimeout(f"{consecutive_timeouts} polls in a row timed out: {why}") from exc
                    self._gap(Reason.TIMEOUT, why)
            else:
                consecutive_timeouts = 0
            if readings:
                self._store(readings)
            # Between polls: a duty's time counts toward the next slot's lateness, as it should.
            await self._run_duties(duties)
            fault_point(self.component)
            now = self.clock.monotonic_ns()
            next_k = k + 1
            behind = math.floor((now - start) / period_ns) + 1
            if behind > next_k:
                self.overruns += behind - next_k
                self._missed_polls(
                    start + next_k * period_ns, start + (behind - 1) * period_ns, behind - next_k
                )
                next_k = behind
            k = next_k

    def _missed_polls(
        self, first_due_mono: int, last_due_mono: int, missed: int, why: str = "passed without a poll"
    ) -> None:
        """Record poll slots that passed without a poll (the process stood still, or a read
        outlasted the period) as one gap: the slots' span, in wall and monotonic time."""
        wall, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        span = {
            "missed": missed,
            "period_s": self.config.period_s,
            "first_slot_ns": wall - (mono - first_due_mono),
            "last_slot_ns": wall - (mono - last_due_mono),
            "span_s": round((last_due_mono - first_due_mono) / 1e9 + self.config.period_s, 6),
        }
        log.warning("poll slots missed", instrument=self.name, **span)
        self._gap(Reason.MISSED_POLLS, f"{missed} poll slot(s): {why}", extra=span)
