"""The driver contract for ``modbus`` over the simulator's real pymodbus server, with the daemon.

Idempotent connect and close; recovery from a server restart within the backoff cap; BAD
records during the outage; strictly increasing seq and non-decreasing acquisition times;
one failing unit id recorded BAD with its exception code while the other stays GOOD.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daq.daemon import Daemon
from daq.errors import ConnectError
from daq.journal import JournalReader
from daq.model import Quality
from simulators.synth_modbus import SynthModbusSimulator
from tests.helpers import free_port, make_config, wait_until
from tests.test_modbus_driver import driver_for, instrument, two_unit_map


async def test_connect_and_close_are_idempotent() -> None:
    sim = SynthModbusSimulator()
    listener = await sim.serve("tcp://127.0.0.1:0")
    try:
        drv = driver_for(listener.url)
        first = await drv.connect()
        second = await drv.connect()
        assert first == second
        assert first.extra["requests_per_poll"] == 6
        assert len(first.extra["map_sha256"]) == 64
        assert len(await drv.read()) == 28
        assert len(sim._server.active_connections) == 1  # the second connect reused the link
        await drv.close()
        await drv.close()
        try:
            await drv.read()
        except ConnectError:
            pass
        else:
            raise AssertionError("read after close must raise ConnectError")
        await drv.connect()  # and it comes back
        assert len(await drv.read()) == 28
        await drv.close()
    finally:
        await listener.close()


async def test_server_restart_gives_bad_records_and_recovers_within_the_cap(data_dir: Path) -> None:
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    sim = SynthModbusSimulator(seed=2, options={"time_scale": "50"})
    listener = await sim.serve(listen)
    daemon = Daemon(make_config(data_dir, [instrument("synth", listen)]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 3 * 28)
        sup = daemon.supervisors[0]
        await listener.close()  # the PLC restarts
        await wait_until(lambda: sup.last_error is not None)
        await asyncio.sleep(1.5)  # several failed reconnects, backing off to the 0.5 s cap
        listener = await sim.serve(listen)
        back = asyncio.get_running_loop().time()
        connects = sup.connects
        await wait_until(lambda: sup.connects > connects, timeout=5)
        assert asyncio.get_running_loop().time() - back <= 0.5 + 1.0  # backoff_cap_s + slack
        good_before = sup.readings
        await wait_until(lambda: sup.readings >= good_before + 3 * 28)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings(limit=100_000) if x["instrument"] == "synth"]
        events = [e["kind"] for e in r.events() if e["instrument"] == "synth"]
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert bad
    assert {x["reason"] for x in bad} <= {"disconnected", "connect_failed", "timeout"}
    assert all(x["value"] is None for x in bad)
    # Every channel of the map has a gap record, and GOOD readings come before and after it.
    assert {x["channel"] for x in bad} == {x["channel"] for x in rows}
    first_bad, last_bad = rows.index(bad[0]), rows.index(bad[-1])
    assert any(x["quality"] == Quality.GOOD for x in rows[:first_bad])
    assert any(x["quality"] == Quality.GOOD for x in rows[last_bad:])
    assert events.count("connected") >= 2
    assert "disconnected" in events
    seqs = [x["seq"] for x in rows]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    acq = [x["acq_ns"] for x in rows]
    mono = [x["mono_ns"] for x in rows]
    assert acq == sorted(acq)
    assert mono == sorted(mono)


async def test_failing_unit_is_journaled_bad_with_its_code_while_the_other_stays_good(
    data_dir: Path, tmp_path: Path
) -> None:
    sim = SynthModbusSimulator(
        options={"unit_ids": "1,2"}, faults={"exception_unit": 2, "exception_code": 11}
    )
    listener = await sim.serve("tcp://127.0.0.1:0")
    cfg = make_config(data_dir, [instrument("cell-plc", listener.url, map_file=str(two_unit_map(tmp_path)))])
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 5 * 56)
        sim.faults.pop("exception_unit")  # the gateway reaches unit 2 again
        n = daemon.supervisors[0].readings
        await wait_until(lambda: daemon.supervisors[0].readings >= n + 3 * 56)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=100_000)
    polls: dict[int, set[tuple[str, int]]] = {}
    first_u2_good = min(
        x["id"] for x in rows if x["channel"].startswith("u2.") and x["quality"] == Quality.GOOD
    )
    for x in rows:
        if x["id"] < first_u2_good:
            polls.setdefault(x["channel"].startswith("u1."), set()).add((x["reason"] or "", x["quality"]))
    assert polls[True] == {("", Quality.GOOD)}  # unit 1: GOOD in every poll
    assert polls[False] == {("device_error", Quality.BAD)}  # unit 2: BAD in the same polls
    u2_bad = [x for x in rows if x["channel"].startswith("u2.") and x["quality"] == Quality.BAD]
    assert {x["attrs"]["exception_code"] for x in u2_bad} == {11}
    assert all("gateway target device failed to respond" in x["attrs"]["error"] for x in u2_bad)
    assert len(u2_bad) % 28 == 0
    assert any(x["channel"].startswith("u2.") and x["quality"] == Quality.GOOD for x in rows)


async def test_slow_responses_are_recorded_as_timeouts_then_recover(data_dir: Path) -> None:
    sim = SynthModbusSimulator(faults={"delay_s": 0.4})
    listener = await sim.serve("tcp://127.0.0.1:0")
    daemon = Daemon(make_config(data_dir, [instrument("synth", listener.url)]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].timeouts >= 2)
        sim.faults.pop("delay_s")
        sup = daemon.supervisors[0]
        await wait_until(
            lambda: "reactor_temp" in sup.last_values and sup.last_values["reactor_temp"].value is not None
        )
        n = sup.readings
        await wait_until(lambda: sup.readings >= n + 2 * 28)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=100_000)
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert bad
    assert "timeout" in {x["reason"] for x in bad}
    assert {x["reason"] for x in bad} <= {"timeout", "disconnected", "connect_failed", "parse_error"}
    assert rows[-1]["quality"] == Quality.GOOD


async def test_scheduled_restarts_and_dropped_connections_are_survived(data_dir: Path) -> None:
    port = free_port()
    sim = SynthModbusSimulator(faults={"restart_every_s": 0.8, "restart_down_s": 0.3})
    listener = await sim.serve(f"tcp://127.0.0.1:{port}")
    dropper = SynthModbusSimulator(faults={"disconnect_after_s": 0.5})
    listener2 = await dropper.serve("tcp://127.0.0.1:0")
    daemon = Daemon(make_config(data_dir, [instrument("a", listener.url), instrument("b", listener2.url)]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: len(daemon.supervisors) == 2 and all(s.connects >= 3 for s in daemon.supervisors)
        )
        a, b = daemon.supervisors
        n_a, n_b = a.readings, b.readings
        await wait_until(lambda: a.readings > n_a and b.readings > n_b)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
        await listener2.close()
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=100_000)
    for name in ("a", "b"):
        mine = [x for x in rows if x["instrument"] == name]
        assert any(x["quality"] == Quality.BAD for x in mine)
        assert sum(x["quality"] == Quality.GOOD for x in mine) >= 2 * 28
