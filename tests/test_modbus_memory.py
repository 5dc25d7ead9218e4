"""The Modbus driver over pymodbus's in-memory null modem, against the simulator's real server.

The driver's link factory (:func:`drivers.modbus.link.null_modem`) gives it a real pymodbus
client whose transport is pymodbus's ``NullModem`` instead of a socket; the simulator's real
pymodbus server listens on the same null-modem port. Only the socket is replaced: framing,
transaction ids, the server's request handling and the supervisor's policies all run. The
same scenarios run over real sockets in tests/test_modbus_driver.py and test_modbus_contract.py.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymodbus.transport import NULLMODEM_HOST

from daq.clock import SystemClock
from daq.journal import JournalReader
from daq.model import EventKind, Quality, Reason
from drivers.modbus import ModbusConfig, ModbusDriver, load_map_file
from drivers.modbus.link import null_modem
from simulators.synth_modbus import SynthModbusSimulator
from tests.helpers import supervised, wait_until
from tests.test_modbus_driver import FAST, MAP

#: Null-modem "ports" are names in one process-wide table of pymodbus: one per test.
_ports = itertools.count(20_500)


def memory_driver(port: int, **extra: Any) -> ModbusDriver:
    # The configured port is never opened: the link factory joins the driver in memory.
    data: dict[str, Any] = {"name": "synth", "kind": "modbus", "port": "tcp://plc.invalid:502", **FAST}
    data.update(extra)
    data["channels"] = load_map_file(MAP)
    return ModbusDriver(ModbusConfig.model_validate(data), SystemClock(), link_factory=null_modem(port))


@contextlib.asynccontextmanager
async def served(sim: SynthModbusSimulator) -> AsyncIterator[int]:
    port = next(_ports)
    listener = await sim.serve(f"tcp://{NULLMODEM_HOST}:{port}")
    assert listener.url == f"tcp://{NULLMODEM_HOST}:{port}"
    try:
        yield port
    finally:
        await listener.close()


async def test_a_poll_over_the_null_modem_reads_every_channel() -> None:
    sim = SynthModbusSimulator(seed=1)
    async with served(sim) as port:
        driver = memory_driver(port)
        info = await driver.connect()
        try:
            rows = await driver.read()
        finally:
            await driver.close()
    assert info.extra["requests_per_poll"] == 6
    assert len(rows) == 28
    assert all(r.quality is Quality.GOOD for r in rows)
    # The server answered the driver's reads (and only reads): it ran its own request code.
    assert sum(sim.function_codes.values()) == 6
    assert set(sim.function_codes) <= {1, 2, 3, 4}


async def test_slow_replies_over_the_null_modem_are_timeouts_then_a_reconnect(tmp_path: Path) -> None:
    # Every reply is held back 0.4 s: each poll (0.28 s) times out; after two in a row the
    # supervisor drops the link and reconnects.
    sim = SynthModbusSimulator(seed=2, faults={"delay_s": 0.4})
    async with served(sim) as port:
        driver = memory_driver(port, max_consecutive_timeouts=2, backoff_initial_s=5.0, backoff_cap_s=5.0)
        async with supervised(driver, tmp_path) as sup:
            await wait_until(lambda: sup.timeouts >= 2 and sup.last_error is not None, timeout=10)
    with JournalReader(tmp_path) as r:
        events = r.events()
        rows = r.readings()
    lost = [e for e in events if e["kind"] == EventKind.DISCONNECTED]
    assert lost[0]["detail"]["reason"] == Reason.TIMEOUT
    assert "2 polls in a row timed out" in lost[0]["detail"]["error"]
    assert {x["reason"] for x in rows if x["quality"] == Quality.BAD} == {Reason.TIMEOUT}


async def test_a_server_restart_over_the_null_modem_is_a_gap_and_a_reconnect(tmp_path: Path) -> None:
    sim = SynthModbusSimulator(seed=3, options={"time_scale": "50"})
    async with served(sim) as port:
        driver = memory_driver(port, backoff_initial_s=0.1, backoff_cap_s=0.3)
        async with supervised(driver, tmp_path) as sup:
            await wait_until(lambda: sup.readings >= 2 * 28, timeout=10)
            await sim.restart(down_s=0.5)
            await wait_until(lambda: sup.connects >= 2, timeout=10)
            before = sup.readings
            await wait_until(lambda: sup.readings >= before + 2 * 28, timeout=10)
    with JournalReader(tmp_path) as r:
        events = r.events()
        rows = r.readings()
    kinds = [e["kind"] for e in events]
    assert kinds.count(EventKind.CONNECTED) >= 2
    assert EventKind.DISCONNECTED in kinds
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    # The gap is recorded for every channel of the map, with the reason the link failed.
    assert {x["channel"] for x in bad} == {r["channel"] for r in rows if r["quality"] == Quality.GOOD}
    assert {x["reason"] for x in bad} <= {Reason.DISCONNECTED, Reason.CONNECT_FAILED, Reason.TIMEOUT}
    good_after = [x for x in rows if x["quality"] == Quality.GOOD and x["acq_ns"] > bad[-1]["acq_ns"]]
    assert len(good_after) >= 28
