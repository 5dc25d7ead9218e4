"""The supervisor over real byte streams: socket:// and a PTY, outages, reconnects, bad frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daq.backoff import backoff_delay
from daq.clock import ManualClock, SystemClock
from daq.config.base import InstrumentBase
from daq.configfile.load import JournalSection
from daq.daemon import Daemon
from daq.errors import ConnectError
from daq.journal import Journal, JournalReader
from daq.model import DeviceInfo, Quality, Reading
from daq.supervisor import Supervisor
from drivers.base import Capability, Deadline, Driver
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import free_port, make_config, wait_until


def vdc_config(data_dir: Path, port: str, **extra: object) -> object:
    inst = {"name": "dc1", "kind": "veenstra-vdc404", "port": port, "stale_after_s": 1.0,
            "backoff_initial_s": 0.1, "backoff_cap_s": 1.0, **extra}  # fmt: skip
    return make_config(data_dir, [inst])


async def test_readings_flow_over_socket(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.05", "nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url))  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 5)
    daemon.request_stop()
    await task
    await sim.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
        kinds = [e["kind"] for e in r.events()]
    good = [x for x in rows if x["quality"] == Quality.GOOD]
    assert len(good) >= 5
    assert good[0]["unit"] == "Bq"
    assert good[0]["attrs"]["nuclide"] == "F-18"
    assert good[0]["attrs"]["reported_unit"] in {"GBq", "MBq"}
    assert good[0]["raw"].endswith(b"\r\n")
    assert "connected" in kinds
    acq = [x["acq_ns"] for x in rows]
    assert acq == sorted(acq)


async def test_outage_gives_bad_gap_records_and_reconnects_within_cap(data_dir: Path) -> None:
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    sim = Vdc404Simulator(options={"interval_s": "0.05"})
    listener = await sim.serve(listen)
    daemon = Daemon(vdc_config(data_dir, f"socket://127.0.0.1:{port}"))  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 3)
    sup = daemon.supervisors[0]
    await listener.close()  # the instrument goes away mid-run
    await wait_until(lambda: sup.last_error is not None)
    await asyncio.sleep(1.5)  # a few failed reconnects
    listener = await sim.serve(listen)
    back = asyncio.get_running_loop().time()
    connects = sup.connects
    await wait_until(lambda: sup.connects > connects, timeout=5)
    elapsed = asyncio.get_running_loop().time() - back
    assert elapsed <= 1.0 + 0.5  # backoff_cap_s plus scheduling slack
    await wait_until(lambda: sup.readings >= 10)
    daemon.request_stop()
    await task
    await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
        events = r.events()
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert len(bad) >= 2  # the disconnect and at least one failed reconnect
    assert {x["reason"] for x in bad} <= {"disconnected", "connect_failed", "timeout", "parse_error"}
    assert all(x["value"] is None for x in bad)
    assert [e["kind"] for e in events].count("connected") >= 2
    assert "disconnected" in [e["kind"] for e in events]
    # The gap sits between GOOD readings, in time order.
    first_bad = rows.index(bad[0])
    assert any(x["quality"] == Quality.GOOD for x in rows[:first_bad])
    assert any(x["quality"] == Quality.GOOD for x in rows[first_bad:])
    assert sup.reconnects >= 1


async def test_readings_over_a_pty(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.05", "nuclide": "Ga-68"}).serve("pty")
    assert sim.url.startswith("/dev/")
    daemon = Daemon(vdc_config(data_dir, sim.url))  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 5)
    daemon.request_stop()
    await task
    await sim.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["quality"] == Quality.GOOD]
    assert rows[0]["attrs"]["nuclide"] == "Ga-68"


async def test_garbled_frames_recorded_bad_with_raw_bytes(data_dir: Path) -> None:
    sim = Vdc404Simulator(seed=3, options={"interval_s": "0.02"}, faults={"garble": 0.5})
    listener = await sim.serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, listener.url))  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].parse_errors >= 3)
    await wait_until(lambda: daemon.supervisors[0].readings >= 20)
    daemon.request_stop()
    await task
    await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
        events = [e for e in r.events() if e["kind"] == "parse_error"]
    bad = [x for x in rows if x["reason"] == "parse_error"]
    assert bad
    assert all(x["raw"] for x in bad)
    assert all(e["raw"] for e in events)
    assert any(x["quality"] == Quality.GOOD for x in rows)


def test_backoff_doubles_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 0.2, 5.0, rng) for n in range(1, 12)]
    assert all(d <= 5.0 for d in delays)
    assert delays[0] <= 0.2
    assert delays[-1] >= 4.0
    assert delays[2] > delays[0]


class _SlowPolled(Driver):
    """A polled driver whose reads take a varying time on a manual clock."""

    kind = "test-slow"
    config_model = InstrumentBase
    capability = Capability.POLLED

    def __init__(self, clock: ManualClock):
        super().__init__(InstrumentBase(name="p1", kind="test-slow", period_s=1.0, timeout_s=0.9), clock)
        self.manual = clock
        self.starts: list[int] = []

    async def connect(self) -> DeviceInfo:
        return DeviceInfo(model="test")

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        self.starts.append(self.manual.monotonic_ns())
        self.manual.advance(0.1 + 0.3 * (len(self.starts) % 3))  # reads take 0.1 to 0.7 s
        return [self.reading("x", 1.0, "u")]

    async def close(self) -> None:
        return None


async def test_poll_grid_does_not_drift_with_read_time(data_dir: Path) -> None:
    clock = ManualClock()
    journal = await Journal.open(data_dir, clock=SystemClock(), settings=JournalSection())
    driver = _SlowPolled(clock)
    sup = Supervisor(driver, journal, clock, offset_s=0.25)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: len(driver.starts) >= 20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await journal.close()
    t0 = driver.starts[0]
    offsets = [(t - t0) / 1e9 for t in driver.starts[:20]]
    assert offsets == [float(k) for k in range(20)]


class _SwallowsCancel(Driver):
    """A polled driver whose library swallows a cancellation, as asyncio.wait_for can on 3.11."""

    kind = "test-swallow"
    config_model = InstrumentBase
    capability = Capability.POLLED

    def __init__(self) -> None:
        super().__init__(
            InstrumentBase(name="sw", kind="test-swallow", period_s=0.05, timeout_s=0.04), SystemClock()
        )
        self.reads = 0

    async def connect(self) -> DeviceInfo:
        return DeviceInfo(model="test")

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        self.reads += 1
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass  # the cancellation is lost here
        return [self.reading("x", 1.0, "u")]

    async def close(self) -> None:
        return None


async def test_supervisor_stops_even_when_a_library_swallows_the_cancellation(data_dir: Path) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock(), settings=JournalSection())
    driver = _SwallowsCancel()
    sup = Supervisor(driver, journal, SystemClock())
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: driver.reads >= 3)
    while not task.done():
        task.cancel()  # once: the cancel lands in read(), is swallowed, and must still stop the loop
        try:
            await asyncio.wait_for(asyncio.shield(task), 2.0)
        except asyncio.CancelledError:
            break
        except TimeoutError:
            raise AssertionError("the supervisor kept polling after it was cancelled") from None
    assert task.cancelled()
    await journal.close()


class _Unplugged(Driver):
    """An instrument that never answers: every connect fails."""

    kind = "test-unplugged"
    config_model = InstrumentBase
    capability = Capability.POLLED

    def __init__(self, clock: ManualClock) -> None:
        cfg = InstrumentBase(name="u1", kind="test-unplugged", period_s=1.0, backoff_initial_s=1.0,
                             backoff_cap_s=5.0)  # fmt: skip
        super().__init__(cfg, clock)
        self.attempts = 0

    async def connect(self) -> DeviceInfo:
        self.attempts += 1
        raise ConnectError("no such port")

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        raise AssertionError("never connected")

    async def close(self) -> None:
        return None


async def test_an_unplugged_instrument_is_logged_once_then_reminded_not_every_retry(data_dir: Path) -> None:
    import structlog

    clock = ManualClock()
    journal = await Journal.open(data_dir, clock=SystemClock(), settings=JournalSection())
    driver = _Unplugged(clock)
    sup = Supervisor(driver, journal, clock)
    started_ns = clock.monotonic_ns()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(sup.run())
        # Backoff sleeps move the manual clock: about 150 s of retries at a 5 s cap.
        await wait_until(lambda: driver.attempts >= 40)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elapsed_s = (clock.monotonic_ns() - started_ns) / 1e9
    await journal.close()
    shown = [e for e in logs if e["log_level"] in ("info", "warning") and e.get("instrument") == "u1"]
    events = [e["event"] for e in shown]
    assert events.count("instrument unavailable") == 1
    # Connecting and backoff after the first failure go to debug; a reminder at most once a minute.
    assert [e["state"] for e in shown if e["event"] == "instrument state"] == ["connecting", "stopped"]
    reminders = [e for e in shown if e["event"] == "instrument still unavailable"]
    assert elapsed_s > 120
    assert 1 <= len(reminders) <= elapsed_s / 60 + 1
    retries = [r["attempts"] for r in reminders]
    assert all(b - a >= 10 for a, b in zip([1, *retries], retries, strict=False))  # 60 s of 5 s backoff
    assert driver.attempts > 4 * len(reminders)
    assert sum(1 for e in logs if e["event"] == "instrument state" and e["log_level"] == "debug") > 40
