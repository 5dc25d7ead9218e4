"""The supervisor owns the silence of streaming drivers and the duties of every driver.

A streaming driver declares how long its instrument may stay silent and waits without a timer
of its own; the supervisor turns a silence into the same ``timeout`` gap and reconnect for
every such driver, asks again when the driver says its cadence changed, and runs the driver's
periodic duties on its own grid beside the stream (cancelling and resuming the wait).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daq.clock import SystemClock
from daq.config.base import InstrumentBase
from daq.journal import Journal, JournalReader
from daq.journal.settings import JournalSection
from daq.model import DeviceInfo, EventKind, Quality, Reading, Reason
from daq.supervisor import State, Supervisor
from daq.transport import Link, null_modem
from drivers.base import Capability, Deadline, Driver, Duty
from drivers.veenstra_vdc404 import Vdc404Config, Vdc404Driver
from tests.helpers import running, wait_until


async def test_a_silent_streaming_instrument_is_a_timeout_gap_timed_by_the_supervisor(tmp_path: Path) -> None:
    instrument: list[Link] = []

    async def factory(url: str, **settings: object) -> Link:
        ours, theirs = null_modem(url)
        instrument.append(theirs)
        return ours

    cfg = Vdc404Config(
        name="dc1", kind="veenstra-vdc404", port="memory://dc1", stale_after_s=0.3,
        backoff_initial_s=5.0, backoff_cap_s=5.0,
    )  # fmt: skip
    driver = Vdc404Driver(cfg, SystemClock(), link_factory=factory)
    assert driver.silence_limit_s() == 0.3
    journal = await Journal.open(tmp_path, clock=SystemClock(), settings=JournalSection())
    sup = Supervisor(driver, journal, SystemClock())
    try:
        async with running(sup):
            await wait_until(lambda: bool(instrument))
            # Lines more often than the limit keep the link: the silence counts from the last one.
            for _ in range(4):
                await instrument[0].write(b"F-18: 1.234 GBq\r\n")
                await asyncio.sleep(0.15)
            await wait_until(lambda: sup.state is State.BACKOFF, timeout=3)
    finally:
        await journal.close()
        for link in instrument:
            await link.close()
    assert sup.readings >= 4
    with JournalReader(tmp_path) as r:
        rows = r.readings()
        events = r.events()
    (lost,) = [e for e in events if e["kind"] == EventKind.DISCONNECTED]
    assert lost["detail"] == {"reason": Reason.TIMEOUT, "error": "dc1: no line for 0.3 s"}
    gaps = [x for x in rows if x["quality"] == Quality.BAD]
    assert [(x["channel"], x["reason"]) for x in gaps] == [("activity", Reason.TIMEOUT)]
    good = [x for x in rows if x["quality"] == Quality.GOOD]
    # Silence of 0.3 s after the last line, not before: the gap follows the last reading.
    assert gaps[0]["acq_ns"] - good[-1]["acq_ns"] >= 250_000_000


class _Quiet(InstrumentBase):
    kind: str = "quiet"


class QuietDriver(Driver):
    """Streams nothing until told; one duty on a 0.1 s grid; a limit set from outside."""

    kind = "quiet"
    config_model = _Quiet
    capability = Capability.STREAMING

    def __init__(self) -> None:
        super().__init__(_Quiet(name="q"), SystemClock())
        self.limit_s: float | None = None
        self.duty_calls = 0
        self.reads_cancelled = 0
        self.frames: asyncio.Queue[Reading] = asyncio.Queue()

    async def connect(self) -> DeviceInfo:
        return DeviceInfo(model="quiet")

    async def close(self) -> None:
        return None

    def channels(self) -> list[tuple[str, str]]:
        return [("x", "")]

    def silence_limit_s(self) -> float | None:
        return self.limit_s

    def silenced(self, silent_s: float) -> str:
        return f"quiet for {silent_s:g} s"

    def duties(self) -> list[Duty]:
        return [Duty("count", 0.1, 0.5, self._duty)]

    async def _duty(self, deadline: Deadline) -> list[Reading]:
        self.duty_calls += 1
        return [self.reading("duty", float(self.duty_calls), "")]

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        try:
            return [await self.frames.get()]
        except asyncio.CancelledError:
            self.reads_cancelled += 1
            raise


async def test_duties_run_on_the_supervisors_grid_and_a_changed_cadence_is_timed_from_then(
    tmp_path: Path,
) -> None:
    driver = QuietDriver()
    journal = await Journal.open(tmp_path, clock=SystemClock(), settings=JournalSection())
    sup = Supervisor(driver, journal, SystemClock())
    loop = asyncio.get_running_loop()
    try:
        async with running(sup):
            await wait_until(lambda: driver.duty_calls >= 5, timeout=3)
            # The waits cancelled for the duties lost nothing: a frame sent now is read.
            driver.frames.put_nowait(driver.reading("x", 1.0, ""))
            await wait_until(lambda: "x" in sup.last_values, timeout=2)
            assert sup.state is State.CONNECTED
            # No limit so far: silence was normal. Now one is declared while the supervisor waits.
            driver.limit_s = 0.3
            changed = loop.time()
            driver.cadence_changed()
            await wait_until(lambda: sup.state is State.BACKOFF, timeout=3)
            noticed = loop.time() - changed
    finally:
        await journal.close()
    assert driver.reads_cancelled >= 4
    assert 0.25 <= noticed < 1.0
    with JournalReader(tmp_path) as r:
        rows = r.readings()
        events = r.events()
    duty_values = [x["value"] for x in rows if x["channel"] == "duty" and x["quality"] == Quality.GOOD]
    assert duty_values == sorted(duty_values)
    assert len(duty_values) >= 5
    (lost,) = [e for e in events if e["kind"] == EventKind.DISCONNECTED]
    assert lost["detail"] == {"reason": Reason.TIMEOUT, "error": "quiet for 0.3 s"}
