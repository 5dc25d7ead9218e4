"""The Modbus driver against an independent Modbus TCP server (pyModbusTCP), over a socket.

The values are put in the server's data bank with pyModbusTCP's own encoders (IEEE 754,
32/64-bit word lists in either word order, two's complement), so the driver's decoding is
checked against another implementation, not against the codec it shares with the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyModbusTCP import utils

from daq.clock import SystemClock
from daq.model import Quality, Reading
from drivers.modbus import ModbusConfig, ModbusDriver
from tests.peers.modbus_tcp import PeerModbusServer

FAST: dict[str, Any] = {"period_s": 1.0, "timeout_s": 0.9, "request_timeout_s": 0.4}


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerModbusServer]:
    server = PeerModbusServer()
    server.url = server.start()  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def fresh(peer: PeerModbusServer) -> Iterator[PeerModbusServer]:
    """The shared server, with every fault it may be given undone afterwards."""
    peer.clear()
    yield peer
    peer.delay_s = 0.0
    peer.fail_code = 0
    for holes in peer.unmapped.values():
        holes.clear()


def driver(url: str, channels: list[dict[str, Any]], **extra: Any) -> ModbusDriver:
    data = {"name": "plc", "kind": "modbus", "port": url, "channels": channels, **FAST, **extra}
    return ModbusDriver(ModbusConfig.model_validate(data), SystemClock())


async def read_once(drv: ModbusDriver) -> dict[str, Reading]:
    await drv.connect()
    try:
        return {r.channel: r for r in await drv.read()}
    finally:
        await drv.close()


def words32(value: int, big: bool) -> list[int]:
    return list(utils.long_list_to_word([value & 0xFFFFFFFF], big_endian=big))


async def test_register_map_of_every_type_and_word_order(fresh: PeerModbusServer) -> None:
    bank = fresh.bank
    bank.set_holding_registers(0, [4242, utils.get_2comp(-1234, 16) & 0xFFFF])
    bank.set_holding_registers(2, words32(-123456789, big=True))
    bank.set_holding_registers(4, words32(3_000_000_000, big=False))
    bank.set_holding_registers(6, words32(utils.encode_ieee(12.5), big=True))
    bank.set_holding_registers(8, words32(utils.encode_ieee(-273.15), big=False))
    bank.set_holding_registers(
        10, list(utils.long_list_to_word([utils.encode_ieee(1234.5678, double=True)], long_long=True))
    )
    bank.set_holding_registers(
        14,
        list(
            utils.long_list_to_word(
                [utils.encode_ieee(-0.001, double=True)], big_endian=False, long_long=True
            )
        ),
    )
    bank.set_holding_registers(18, [0b1000, 1234])
    bank.set_input_registers(
        0, [*words32(utils.encode_ieee(98.6), big=True), utils.get_2comp(-5, 16) & 0xFFFF]
    )
    bank.set_coils(0, [True, False, True])
    bank.set_discrete_inputs(5, [True, False])
    channels = [
        {"name": "u16", "table": "holding", "address": 0},
        {"name": "i16", "table": "holding", "address": 1, "type": "int16"},
        {"name": "i32_abcd", "table": "holding", "address": 2, "type": "int32"},
        {"name": "u32_cdab", "table": "holding", "address": 4, "type": "uint32", "word_order": "little"},
        {"name": "f32_abcd", "table": "holding", "address": 6, "type": "float32"},
        {"name": "f32_cdab", "table": "holding", "address": 8, "type": "float32", "word_order": "little"},
        {"name": "f64_big", "table": "holding", "address": 10, "type": "float64"},
        {"name": "f64_little", "table": "holding", "address": 14, "type": "float64", "word_order": "little"},
        {"name": "bit3", "table": "holding", "address": 18, "type": "bit", "bit": 3},
        {"name": "scaled", "table": "holding", "address": 19, "scale": 0.1, "offset": -10, "unit": "degC"},
        {"name": "in_f32", "table": "input", "address": 0, "type": "float32"},
        {"name": "in_i16", "table": "input", "address": 2, "type": "int16"},
        {"name": "coil0", "table": "coil", "address": 0},
        {"name": "coil1", "table": "coil", "address": 1},
        {"name": "coil2", "table": "coil", "address": 2},
        {"name": "di5", "table": "discrete", "address": 5},
        {"name": "di6", "table": "discrete", "address": 6},
    ]
    got = await read_once(driver(fresh.url, channels))  # type: ignore[attr-defined]
    assert all(r.quality is Quality.GOOD for r in got.values()), got
    values = {name: r.value for name, r in got.items()}
    assert values == {
        "u16": 4242.0,
        "i16": -1234.0,
        "i32_abcd": -123456789.0,
        "u32_cdab": 3_000_000_000.0,
        "f32_abcd": 12.5,
        "f32_cdab": pytest.approx(-273.15, rel=1e-7),
        "f64_big": 1234.5678,
        "f64_little": -0.001,
        "bit3": 1.0,
        "scaled": pytest.approx(113.4),
        "in_f32": pytest.approx(98.6, rel=1e-7),
        "in_i16": -5.0,
        "coil0": 1.0,
        "coil1": 0.0,
        "coil2": 1.0,
        "di5": 1.0,
        "di6": 0.0,
    }
    assert got["scaled"].unit == "degC"
    # Coalesced: one read per table (holding 0..19, input 0..2, coils 0..2, discrete 5..6).
    assert sorted(fresh.requests) == [("coil", 0, 3), ("discrete", 5, 2), ("holding", 0, 20), ("input", 0, 3)]


async def test_one_unmapped_address_in_a_block_is_isolated_and_the_rest_stay_good(
    fresh: PeerModbusServer,
) -> None:
    fresh.bank.set_holding_registers(100, list(range(1, 11)))
    fresh.unmapped["holding"].add(106)  # a hole in the PLC's tag table, inside the block
    channels = [{"name": f"r{a}", "table": "holding", "address": a} for a in range(100, 110)]
    drv = driver(fresh.url, channels)  # type: ignore[attr-defined]
    await drv.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            first = {r.channel: r for r in await drv.read()}
            fresh.clear()
            second = {r.channel: r for r in await drv.read()}
        problems = drv.problems()
    finally:
        await drv.close()
    for got in (first, second):
        bad = {name for name, r in got.items() if r.quality is not Quality.GOOD}
        assert bad == {"r106"}
        assert got["r106"].value is None
        assert got["r106"].reason == "device_error"
        assert got["r106"].attrs is not None
        assert got["r106"].attrs["exception_code"] == 2
        assert {name: r.value for name, r in got.items() if name != "r106"} == {
            f"r{a}": float(a - 99) for a in range(100, 110) if a != 106
        }
    # Remembered: the next poll does not bisect again; the rest is read in blocks around 106.
    assert fresh.reads("holding") == [(100, 6), (106, 1), (107, 3)]
    assert problems == {
        "refused_addresses": {"r106": "unit 1 holding 106 x1: exception 2 (illegal data address)"}
    }
    refused = [e for e in logs if e["event"].startswith("modbus address refused")]
    assert len(refused) == 1  # logged once, not every poll
    assert refused[0]["channel"] == "r106"
    assert not [e for e in logs if e["event"] == "modbus unit failing"]
    # The hole is filled (the PLC program was fixed): the channel reads again, and says so.
    fresh.unmapped["holding"].clear()
    await drv.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            third = {r.channel: r for r in await drv.read()}
    finally:
        await drv.close()
    assert all(r.quality is Quality.GOOD for r in third.values())
    assert drv.problems() == {}
    assert [e["event"] for e in logs if "answered again" in e["event"]] == ["modbus addresses answered again"]


async def test_a_slow_server_starving_the_same_channels_is_logged_once_and_counted(
    fresh: PeerModbusServer,
) -> None:
    fresh.bank.set_holding_registers(0, [1, 2, 3, 4])
    fresh.delay_s = 0.1
    # Each read takes 0.1 s and may take 0.15: after two, a third would not fit in 0.3 s.
    # Four separate reads (holes between the addresses, max_gap 0).
    channels = [{"name": f"c{a}", "table": "holding", "address": 10 * a} for a in range(4)]
    drv = driver(fresh.url, channels, timeout_s=0.3, request_timeout_s=0.15)  # type: ignore[attr-defined]
    await drv.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            polls = [await drv.read() for _ in range(3)]
        problems = drv.problems()
    finally:
        await drv.close()
    for readings in polls:
        late = {r.channel for r in readings if r.quality is Quality.BAD}
        assert late == {"c2", "c3"}
    assert problems == {"starved": {"c2": 3, "c3": 3}}
    starving = [e for e in logs if e["event"].startswith("modbus channels starved")]
    assert len(starving) == 1
    assert starving[0]["channels"] == ["c2", "c3"]
    # Given time again, the channels are read and leave the starved list.
    fresh.delay_s = 0.0
    await drv.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            after = await drv.read()
    finally:
        await drv.close()
    assert all(r.quality is Quality.GOOD for r in after)
    assert drv.problems() == {}
    assert [e["event"] for e in logs] == ["modbus channels read again after starving"]


async def test_peer_server_over_the_daemon_poll_loop(fresh: PeerModbusServer) -> None:
    """Several polls in a row over one connection: transaction ids and framing stay in step."""
    fresh.bank.set_input_registers(50, words32(utils.encode_ieee(1.5), big=True))
    drv = driver(fresh.url, [{"name": "x", "table": "input", "address": 50, "type": "float32"}])  # type: ignore[attr-defined]
    await drv.connect()
    try:
        values: list[float | None] = []
        for i in range(20):
            fresh.bank.set_input_registers(50, words32(utils.encode_ieee(1.5 + i), big=True))
            values.extend(r.value for r in await drv.read())
            await asyncio.sleep(0)
    finally:
        await drv.close()
    assert values == [1.5 + i for i in range(20)]


async def test_unit_failing_is_logged_once_and_clears_when_it_answers_again(fresh: PeerModbusServer) -> None:
    """A unit that reports a device failure for a while, with a hole in its map throughout."""
    fresh.bank.set_holding_registers(200, [7, 8, 9])
    fresh.unmapped["holding"].add(201)
    channels = [{"name": f"h{a}", "table": "holding", "address": a} for a in (200, 201, 202)]
    drv = driver(fresh.url, channels)  # type: ignore[attr-defined]
    await drv.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            await drv.read()  # the hole is found
            fresh.fail_code = 4
            failing = [await drv.read() for _ in range(3)]
            during = drv.problems()
            fresh.fail_code = 0
            recovered = [await drv.read() for _ in range(2)]
    finally:
        await drv.close()
    assert all(
        r.quality is Quality.BAD and r.attrs and r.attrs["exception_code"] == 4 for p in failing for r in p
    )
    assert "units_failing" in during
    assert "exception 4" in during["units_failing"]["1"]
    for poll in recovered:
        assert {r.channel: r.value for r in poll if r.quality is Quality.GOOD} == {"h200": 7.0, "h202": 9.0}
    events = [e["event"] for e in logs if e["event"].startswith("modbus unit")]
    assert events == ["modbus unit failing", "modbus unit answering again"]
    assert drv.problems() == {
        "refused_addresses": {"h201": "unit 1 holding 201 x1: exception 2 (illegal data address)"}
    }


async def test_refused_address_shows_in_the_daemons_status_and_alarms(
    fresh: PeerModbusServer, data_dir: Any
) -> None:
    from daq.daemon import Daemon
    from daq.status import compute_alarms
    from tests.helpers import make_config, wait_until

    fresh.bank.set_holding_registers(300, [1, 2])
    fresh.unmapped["holding"].add(301)
    inst = {
        "name": "plc", "kind": "modbus", "port": fresh.url, "period_s": 0.2, "timeout_s": 0.18,  # type: ignore[attr-defined]
        "channels": [{"name": "ok", "table": "holding", "address": 300},
                     {"name": "hole", "table": "holding", "address": 301}],
    }  # fmt: skip
    daemon = Daemon(make_config(data_dir, [inst]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 4)
        status = daemon.status()
    finally:
        daemon.request_stop()
        await task
    problems = status["instruments"]["plc"]["problems"]
    assert problems == {
        "refused_addresses": {"hole": "unit 1 holding 301 x1: exception 2 (illegal data address)"}
    }
    alarms = compute_alarms(
        {**status, "instruments": {"plc": {**status["instruments"]["plc"], "channels": {}}}}
    )
    assert {"severity": "warning", "subject": "plc",
            "message": "refused_addresses: hole (unit 1 holding 301 x1: exception 2 (illegal data address))"} in alarms  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["uint16", "int32"])), min_size=1, max_size=20
    ),
    refused=st.sets(st.integers(0, 63), max_size=4),
    max_gap=st.integers(0, 4),
)
def test_refused_addresses_anywhere_are_isolated_and_the_plan_settles(
    fresh: PeerModbusServer, layout: list[tuple[int, str]], refused: set[int], max_gap: int
) -> None:
    """Any map, any refused addresses (in a channel or in a hole bridged by max_gap): each
    channel touching a refused address is BAD with exception 2, every other one GOOD with
    its value, from the first poll on; the plan then settles and never asks for a refused
    address together with anything else."""
    taken: set[int] = set()
    channels: list[dict[str, Any]] = []
    for address, kind in layout:
        width = 2 if kind == "int32" else 1
        span = set(range(address, address + width))
        if span & taken:
            continue
        taken |= span
        channels.append({"name": f"c{address}", "table": "holding", "address": address, "type": kind})
    fresh.bank.set_holding_registers(0, [1000 + a for a in range(66)])
    fresh.unmapped["holding"].clear()
    fresh.unmapped["holding"].update(refused)

    async def polls() -> list[tuple[dict[str, Reading], list[tuple[int, int]]]]:
        drv = driver(fresh.url, channels, max_gap=max_gap)  # type: ignore[attr-defined]
        await drv.connect()
        out = []
        try:
            for _ in range(3):
                fresh.clear()
                got = {r.channel: r for r in await drv.read()}
                out.append((got, fresh.reads("holding")))
        finally:
            await drv.close()
        return out

    results = asyncio.run(polls())
    for got, _ in results:
        assert set(got) == {c["name"] for c in channels}
        for c in channels:
            a, width = c["address"], 2 if c["type"] == "int32" else 1
            r = got[c["name"]]
            if refused & set(range(a, a + width)):
                assert r.quality is Quality.BAD
                assert r.attrs is not None
                assert r.attrs["exception_code"] == 2
            else:
                expected = 1000 + a if width == 1 else ((1000 + a) << 16) | (1000 + a + 1)
                assert (r.quality, r.value) == (Quality.GOOD, float(expected))
    (_, second), (_, third) = results[1], results[2]
    assert second == third  # settled: no search after the first poll
    alone = {(c["address"], 2 if c["type"] == "int32" else 1) for c in channels}
    for address, count in second:
        if refused & set(range(address, address + count)):
            assert (address, count) in alone  # a refused channel's own read, never a block
