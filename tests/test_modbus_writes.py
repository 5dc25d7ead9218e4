"""Read-only by default: only function codes 1 to 4 reach the PLC; audited writes when enabled."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from daq.daemon import Daemon
from daq.errors import DeviceError, WriteRefused
from daq.journal import JournalReader
from drivers.modbus import load_map_file
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_modbus_map import SETPOINT_ADDRESS
from tests.helpers import free_port, make_config, wait_until
from tests.test_modbus_driver import MAP, driver_for, instrument


async def _run_daemon(
    data_dir: Path, inst: dict[str, Any], polls: int = 3
) -> tuple[Daemon, asyncio.Task[None]]:
    daemon = Daemon(make_config(data_dir, [inst]))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= polls * 28)
    return daemon, task


async def test_read_only_mode_sends_only_read_function_codes(data_dir: Path) -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve("tcp://127.0.0.1:0")
    daemon, task = await _run_daemon(data_dir, instrument("synth", listener.url))
    try:
        with pytest.raises(WriteRefused, match="writes are disabled"):
            await daemon.instrument_write(
                "synth", "set", "reactor_setpoint=80", actor="tester", reason="try a write in read-only mode"
            )
        # The driver refuses too, should anything call it directly.
        with pytest.raises(WriteRefused, match="writes are disabled"):
            await daemon.supervisors[0].driver.write("set", "remote_hold=1")
        n = daemon.supervisors[0].readings
        await wait_until(lambda: daemon.supervisors[0].readings >= n + 2 * 28)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    assert sum(sim.function_codes.values()) >= 5 * 6
    assert set(sim.function_codes) == {1, 2, 3, 4}
    assert sim.writes == []
    with JournalReader(data_dir) as r:
        audit = [a for a in r.audit() if a["action"].startswith("instrument_write")]
    assert [a["action"] for a in audit] == ["instrument_write_refused"]
    assert audit[0]["actor"] == "tester"
    assert audit[0]["detail"]["value"] == "reactor_setpoint=80"


async def test_enabled_writes_reach_the_plc_and_are_audited(data_dir: Path) -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve("tcp://127.0.0.1:0")
    daemon, task = await _run_daemon(data_dir, instrument("synth", listener.url, allow_writes=True))
    sup = daemon.supervisors[0]
    try:
        answer = await daemon.instrument_write(
            "synth", "set", "reactor_setpoint=87.5", actor="op1", reason="method v3 hold temperature"
        )
        assert "holding 10" in answer
        await daemon.instrument_write(
            "synth", "set", "remote_hold=on", actor="op1", reason="pause before SPE"
        )
        with pytest.raises(WriteRefused, match="not writable"):
            await daemon.instrument_write(
                "synth", "set", "reactor_temp=20", actor="op1", reason="not allowed"
            )
        with pytest.raises(WriteRefused, match="CHANNEL=VALUE"):
            await daemon.instrument_write("synth", "set", "reactor_setpoint", actor="op1", reason="malformed")
        await wait_until(
            lambda: (
                "reactor_setpoint" in sup.last_values
                and sup.last_values["reactor_setpoint"].value == pytest.approx(87.5)
                and sup.last_values["remote_hold"].value == 1.0
            )
        )
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    expected = list(struct.unpack(">2H", struct.pack(">f", 87.5)))
    assert sim.writes == [(1, 16, SETPOINT_ADDRESS, expected), (1, 5, 100, [True])]
    assert set(sim.function_codes) == {1, 2, 3, 4, 5, 16}
    with JournalReader(data_dir) as r:
        audit = [a for a in r.audit() if a["action"].startswith("instrument_write")]
    assert [a["action"] for a in audit] == [
        "instrument_write", "instrument_write", "instrument_write_failed", "instrument_write_failed",
    ]  # fmt: skip
    assert audit[0]["detail"]["reason"] == "method v3 hold temperature"
    assert audit[0]["subject"] == "synth"


async def test_a_write_the_plc_refuses_is_a_device_error_with_its_code() -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve("tcp://127.0.0.1:0")
    # The map says writable, but the PLC keeps holding 0 (the step number) read-only.
    chans = [*load_map_file(MAP), {"name": "step_w", "table": "holding", "address": 0, "writable": True}]
    drv = driver_for(listener.url, chans, allow_writes=True)
    await drv.connect()
    try:
        with pytest.raises(DeviceError) as info:
            await drv.write("set", "step_w=3")
        assert info.value.code == "2"
        assert info.value.channels == ["step_w"]
        with pytest.raises(WriteRefused, match="does not fit"):
            await drv.write("set", "step_w=70000")
        with pytest.raises(WriteRefused, match="unknown command"):
            await drv.write("write_register", "0=1")
    finally:
        await drv.close()
        await listener.close()
    assert sim.writes == []


async def test_a_written_set_point_survives_a_plc_restart() -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve(f"tcp://127.0.0.1:{free_port()}")  # restarted on the same port: see port_range
    drv = driver_for(listener.url, allow_writes=True)
    try:
        await drv.connect()
        await drv.write("set", "reactor_setpoint=72.25")
        await drv.write("set", "remote_hold=true")
        await sim.restart(0.1)
        await drv.close()
        await drv.connect()
        got = {r.channel: r.value for r in await drv.read()}
    finally:
        await drv.close()
        await listener.close()
    assert got["reactor_setpoint"] == pytest.approx(72.25)
    assert got["remote_hold"] == 1.0
