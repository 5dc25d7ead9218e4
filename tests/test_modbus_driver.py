"""The modbus driver against the synthesis simulator's real pymodbus server (TCP and RTU)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daq.clock import SystemClock
from daq.daemon import Daemon
from daq.errors import ConnectError, ReadTimeout
from daq.journal import JournalReader
from daq.model import Quality, Reading
from drivers.modbus import ModbusConfig, ModbusDriver, load_map_file
from simulators.base import Listener
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_modbus_map import STEP_NAMES, register_map_toml
from tests.helpers import make_config, wait_until

MAP = Path(__file__).resolve().parents[1] / "config" / "synth-modbus-map.toml"
# Generous per-request timeouts (timeout_s / 2 per unit id): the test machine is shared and busy.
FAST: dict[str, Any] = {"period_s": 0.3, "timeout_s": 0.28, "backoff_initial_s": 0.1, "backoff_cap_s": 0.5}


def instrument(name: str, url: str, **extra: Any) -> dict[str, Any]:
    """A ``[[instruments]]`` entry for make_config: the shipped map, fast timings."""
    return {"name": name, "kind": "modbus", "port": url, "map_file": str(MAP), **FAST, **extra}


def two_unit_map(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "two-units.toml"
    path.write_text(register_map_toml(unit_ids=(1, 2), **kw))
    return path


def driver_for(url: str, channels: list[dict[str, Any]] | None = None, **extra: Any) -> ModbusDriver:
    data: dict[str, Any] = {"name": "synth", "kind": "modbus", "port": url, **FAST, **extra}
    data["channels"] = channels if channels is not None else load_map_file(MAP)
    return ModbusDriver(ModbusConfig.model_validate(data), SystemClock())


@pytest.fixture
async def two_synths() -> AsyncIterator[tuple[SynthModbusSimulator, Listener]]:
    """Two synthesizers (unit ids 1 and 2) behind one Modbus TCP server, running fast."""
    sim = SynthModbusSimulator(seed=5, options={"unit_ids": "1,2", "time_scale": "1000"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    try:
        yield sim, listener
    finally:
        await listener.close()


def by_channel(readings: list[Reading]) -> dict[str, Reading]:
    return {r.channel: r for r in readings}


async def test_every_channel_of_the_shipped_map_matches_the_process_model(
    two_synths: tuple[SynthModbusSimulator, Listener],
) -> None:
    sim, listener = two_synths
    await asyncio.sleep(0.3)  # the process is a few steps in (time_scale 1000)
    sim.set_frozen(True)
    await asyncio.sleep(0.25)  # the register images caught up with the frozen snapshot
    snap = sim.process(1).snapshot()
    drv = driver_for(listener.url)
    await drv.connect()
    try:
        got = by_channel(await drv.read())
    finally:
        await drv.close()
    assert set(got) == {c["name"] for c in load_map_file(MAP)}
    assert all(r.quality is Quality.GOOD for r in got.values())
    floats = ["reactor_temp", "reactor_pressure", "cell_pressure", "gas_flow", "dose_rate",
              "probe_vial", "probe_reactor", "probe_spe", "probe_product"]  # fmt: skip
    for name in floats:
        assert got[name].value == pytest.approx(snap[name], rel=1e-6, abs=1e-3), name
    assert got["reactor_temp"].unit == "degC"
    assert got["step_number"].value == snap["step_number"]
    assert got["step_number"].attrs == {"text": snap["step_name"]}
    assert snap["step_name"] in STEP_NAMES
    for i in range(1, 9):
        assert got[f"valve_{i}"].value == (1.0 if snap[f"valve_{i}"] else 0.0)
    for name in ("sequence_running", "door_closed", "alarm_overtemp", "alarm_pressure"):
        assert got[name].value == (1.0 if snap[name] else 0.0), name
    assert got["cell_pressure_io"].value == pytest.approx(snap["cell_pressure"], abs=0.051)
    assert got["reactor_setpoint"].value == pytest.approx(95.0)
    assert got["remote_hold"].value == 0.0
    assert (got["process_time"].value or 0) > 0
    # Each reading keeps its own register bytes.
    assert len(got["reactor_temp"].raw or b"") == 4
    assert len(got["process_time"].raw or b"") == 8


@pytest.mark.parametrize("word_order", ["big", "little"])
async def test_word_order_on_the_wire(word_order: str) -> None:
    sim = SynthModbusSimulator(options={"word_order": word_order}, faults={"freeze": 1})
    listener = await sim.serve("tcp://127.0.0.1:0")
    try:
        await asyncio.sleep(0.15)
        temp = sim.process(1).snapshot()["reactor_temp"]
        chans = [
            {"name": "t", "table": "input", "address": 0, "type": "float32", "word_order": "big"},
            {"name": "t_swapped", "table": "input", "address": 0, "type": "float32", "word_order": "little"},
        ]
        drv = driver_for(listener.url, chans)
        await drv.connect()
        got = by_channel(await drv.read())
        await drv.close()
    finally:
        await listener.close()
    right, wrong = ("t", "t_swapped") if word_order == "big" else ("t_swapped", "t")
    assert got[right].value == pytest.approx(temp, rel=1e-6)
    assert got[wrong].value != pytest.approx(temp, rel=1e-3)


async def test_one_unit_answering_exceptions_leaves_the_other_good(
    two_synths: tuple[SynthModbusSimulator, Listener], tmp_path: Path
) -> None:
    sim, listener = two_synths
    sim.faults["exception_unit"] = 2
    sim.faults["exception_code"] = 4
    drv = driver_for(listener.url, load_map_file(two_unit_map(tmp_path)))
    await drv.connect()
    try:
        readings = await drv.read()
    finally:
        await drv.close()
    u1 = [r for r in readings if r.channel.startswith("u1.")]
    u2 = [r for r in readings if r.channel.startswith("u2.")]
    assert len(u1) == len(u2) == 28
    assert all(r.quality is Quality.GOOD for r in u1)
    assert all(r.quality is Quality.BAD and r.value is None for r in u2)
    assert {r.reason for r in u2} == {"device_error"}
    assert {r.attrs["exception_code"] for r in u2 if r.attrs} == {4}
    assert all(r.attrs and r.attrs["unit_id"] == 2 for r in u2)
    # Exception 4 says the unit is down: its other reads in that poll were not sent.
    assert sum(1 for uid, *_ in sim.request_log if uid == 2) == 1


async def test_illegal_address_marks_only_that_read(
    two_synths: tuple[SynthModbusSimulator, Listener],
) -> None:
    _sim, listener = two_synths
    chans = [*load_map_file(MAP), {"name": "missing", "table": "input", "address": 900}]
    drv = driver_for(listener.url, chans)
    await drv.connect()
    try:
        got = by_channel(await drv.read())
    finally:
        await drv.close()
    assert got["missing"].quality is Quality.BAD
    assert got["missing"].attrs is not None
    assert got["missing"].attrs["exception_code"] == 2
    assert all(r.quality is Quality.GOOD for name, r in got.items() if name != "missing")


async def test_silent_unit_times_out_alone_and_all_silent_is_a_read_timeout(
    two_synths: tuple[SynthModbusSimulator, Listener], tmp_path: Path
) -> None:
    sim, listener = two_synths
    sim.faults["silent_unit"] = 2
    drv = driver_for(
        listener.url,
        load_map_file(two_unit_map(tmp_path)),
        period_s=1.0,
        timeout_s=0.9,
        request_timeout_s=0.15,
    )
    await drv.connect()
    try:
        readings = await drv.read()
        u1 = [r for r in readings if r.channel.startswith("u1.")]
        u2 = [r for r in readings if r.channel.startswith("u2.")]
        assert all(r.quality is Quality.GOOD for r in u1)
        assert {(r.quality, r.reason) for r in u2} == {(Quality.BAD, "timeout")}
        sim.faults["silent_unit"] = 1
        only_u1 = driver_for(listener.url, request_timeout_s=0.1)
        await only_u1.connect()
        try:
            with pytest.raises(ReadTimeout):
                await only_u1.read()
        finally:
            await only_u1.close()
    finally:
        await drv.close()


async def test_each_value_is_stamped_when_its_own_response_arrived(
    two_synths: tuple[SynthModbusSimulator, Listener],
) -> None:
    sim, listener = two_synths
    sim.faults["delay_s"] = 0.03  # every response 30 ms late: six reads take >= 180 ms
    drv = driver_for(listener.url, timeout_s=0.9, period_s=1.0, request_timeout_s=0.2)
    await drv.connect()
    try:
        readings = await drv.read()
    finally:
        await drv.close()
    got = by_channel(readings)
    coil_ns, input_ns = got["valve_1"].acq_ns, got["reactor_temp"].acq_ns
    assert got["valve_1"].acq_ns == got["valve_8"].acq_ns  # one response, one time
    assert input_ns - coil_ns >= 5 * 0.025e9  # five later responses, each >= 30 ms apart
    assert len({r.acq_ns for r in readings}) == 6


async def test_coalescing_on_the_wire_100_channels_per_unit(tmp_path: Path) -> None:
    sim = SynthModbusSimulator(options={"extra_channels": "72"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    try:
        chans = tomllib.loads(register_map_toml(extra_channels=72))["channels"]
        assert len(chans) == 100
        drv = driver_for(listener.url, chans)
        await drv.connect()
        sim.request_log.clear()
        readings = await drv.read()
        await drv.close()
    finally:
        await listener.close()
    assert len(readings) == 100
    assert all(r.quality is Quality.GOOD for r in readings)
    # input 0..17, input 100..223 (124 registers), input 224..243, holding, 2 coil, 2 discrete reads.
    assert sorted((fc, a, n) for _uid, fc, a, n in sim.request_log) == [
        (1, 0, 8), (1, 100, 1), (2, 0, 1), (2, 3, 1), (3, 0, 12), (4, 0, 18), (4, 100, 124), (4, 224, 20),
    ]  # fmt: skip


async def test_connect_to_nothing_is_a_connect_error(dead_port: int) -> None:
    drv = driver_for(f"tcp://127.0.0.1:{dead_port}")
    with pytest.raises(ConnectError):
        await drv.connect()
    await drv.close()


async def test_rtu_over_a_pty_through_the_daemon(data_dir: Path, tmp_path: Path) -> None:
    sim = SynthModbusSimulator(options={"unit_ids": "1,2"})
    listener = await sim.serve("pty")
    assert listener.url.startswith("/dev/")
    cfg = make_config(
        data_dir,
        [instrument("synth-rtu", listener.url, map_file=str(two_unit_map(tmp_path)),
                    period_s=0.5, timeout_s=0.45, serial={"parity": "N", "baudrate": 19200})],
    )  # fmt: skip
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 3 * 56)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
        events = r.events()
    assert {x["quality"] for x in rows} == {Quality.GOOD}
    assert {x["channel"].split(".")[0] for x in rows} == {"u1", "u2"}
    connected = [e for e in events if e["kind"] == "connected"]
    assert connected[0]["detail"]["device"]["model"].startswith("Modbus RTU")
    assert set(sim.function_codes) == {1, 2, 3, 4}


async def test_the_demo_cells_synthesizer_runs_on_its_simulator(data_dir: Path) -> None:
    from daq.cli import simulate
    from daq.cli.demo import SIMULATION, attach
    from daq.configfile.load import load_config

    cfg = load_config(MAP.parent / "demo.toml").with_data_dir(data_dir)
    inst = next(i for i in cfg.instruments if i.name == "synth-modbus")
    assert isinstance(inst, ModbusConfig)
    assert inst.map_file == str(MAP)  # resolved next to demo.toml
    spec = SIMULATION["synth-modbus"]
    listener = await simulate.start(spec.kind, spec.listen, options=spec.options, faults=spec.faults)
    daemon = Daemon(
        cfg.with_instruments([attach(inst, listener).model_copy(update={"period_s": 0.2, "timeout_s": 0.15})])
    )
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 2 * 28)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
    assert {x["quality"] for x in rows} == {Quality.GOOD}
    assert len({x["channel"] for x in rows}) == 28


@pytest.mark.slow
async def test_daq_simulate_synth_modbus_as_a_process_tcp_and_pty(tmp_path: Path) -> None:
    from tests.proc import spawn, stop

    two = two_unit_map(tmp_path)
    for listen, extra in (("tcp://127.0.0.1:0", {}), ("pty", {"serial": {"parity": "N"}})):
        proc = spawn("simulate", "synth-modbus", "--listen", listen, "--set", "unit_ids=1,2",
                     "--set", "extra_channels=3", "--fault", "exception_unit=2")  # fmt: skip
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert "synth-modbus listening on " in line, line
            url = line.rsplit(" ", 1)[1].strip()
            assert url.startswith("tcp://127.0.0.1:" if listen != "pty" else "/dev/")
            drv = driver_for(url, load_map_file(two), timeout_s=0.9, period_s=1.0, **extra)
            await drv.connect()
            try:
                readings = await drv.read()
            finally:
                await drv.close()
        finally:
            code, _out, err = await asyncio.to_thread(stop, proc)
        assert code == 0, err
        assert {r.quality for r in readings if r.channel.startswith("u1.")} == {Quality.GOOD}
        assert {r.reason for r in readings if r.channel.startswith("u2.")} == {"device_error"}


async def test_a_state_the_enum_does_not_name_is_flagged(
    two_synths: tuple[SynthModbusSimulator, Listener],
) -> None:
    _sim, listener = two_synths
    chans = [{"name": "batch", "table": "holding", "address": 1, "enum": {"7": "seven"}}]
    drv = driver_for(listener.url, chans)
    await drv.connect()
    try:
        (reading,) = await drv.read()
    finally:
        await drv.close()
    assert reading.quality is Quality.GOOD
    assert reading.value == 0.0
    assert reading.attrs == {"unmapped_state": True}


async def test_a_slow_plc_keeps_what_fits_in_the_poll(
    two_synths: tuple[SynthModbusSimulator, Listener],
) -> None:
    sim, listener = two_synths
    sim.faults["delay_s"] = 0.05  # six reads of 50 ms, each allowed 0.2 s, do not fit in 0.3 s
    drv = driver_for(listener.url, period_s=1.0, timeout_s=0.3, request_timeout_s=0.2)
    await drv.connect()
    try:
        readings = await asyncio.wait_for(drv.read(), 0.3 + 0.2)  # the supervisor's limit, plus slack
    finally:
        await drv.close()
    good = [r for r in readings if r.quality is Quality.GOOD]
    late = [r for r in readings if r.quality is Quality.BAD]
    assert len(readings) == 28
    assert good  # the first reads made it
    assert late  # the rest were not sent, and say so
    assert {r.reason for r in late} == {"timeout"}
    assert all(r.attrs and "were spent" in r.attrs["error"] for r in late)


async def test_rtu_keeps_the_inter_frame_gap() -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve("pty")
    rtu: dict[str, Any] = {"serial": {"parity": "N"}, "period_s": 2.0, "timeout_s": 1.9}
    try:
        plain = driver_for(listener.url, **rtu)
        assert plain._gap_ns == int(3.5 * 11 / 19200 * 1e9)  # 3.5 characters at 19200 baud
        spaced = driver_for(listener.url, frame_gap_s=0.05, **rtu)
        await spaced.connect()
        try:
            await spaced.read()
            start = asyncio.get_running_loop().time()
            readings = await spaced.read()  # six requests: at least five gaps between them
            elapsed = asyncio.get_running_loop().time() - start
        finally:
            await spaced.close()
    finally:
        await listener.close()
    assert {r.quality for r in readings} == {Quality.GOOD}
    assert elapsed >= 5 * 0.05
