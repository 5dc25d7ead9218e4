"""The driver contract for ``opcua`` over the simulator's real asyncua server.

Idempotent connect and close; a server restart detected promptly, recorded as BAD gap
records for every mapped channel, and recovered from by the supervisor within its backoff
cap (new session, NodeIds resolved again, subscription created again); sequence numbers
strictly increasing and acquisition times in order across the outage.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from daq.clock import SystemClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality
from drivers.opcua import OpcUaConfig, OpcUaDriver
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from tests.helpers import config_text, free_port, wait_until

module_loop = pytest.mark.asyncio(loop_scope="module")

CHANNELS = ["reactor_temp", "reactor_pressure", "probe_reactor", "valve_3", "step_number"]
CAP_S = 1.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[tuple[SynthOpcUaSimulator, str]]:
    simulator = SynthOpcUaSimulator(seed=11, options={"update_s": "0.05", "time_scale": "30"})
    # A port of this worker's own (tests.helpers.port_range): the restart tests stop the server
    # and start it again on the same port, which nothing else may take meanwhile.
    listener = await simulator.serve(f"opc.tcp://127.0.0.1:{free_port()}")
    yield simulator, listener.url
    await listener.close()


def daemon_config(data_dir: Path, url: str) -> Any:
    # Browse paths for some nodes, NodeIds for the others: both are resolved on every connect.
    nodes = [
        {"channel": c, "browse_path": f"/2:Synth/2:{c}"} if i % 2 else {"channel": c, "node_id": node_id(c)}
        for i, c in enumerate(CHANNELS)
    ]
    inst = {
        "name": "synth-ua", "kind": "opcua", "url": url, "backoff_initial_s": 0.1, "backoff_cap_s": CAP_S,
        "connect_timeout_s": 3.0, "keepalive_s": 0.5, "stale_after_s": 2.0, "watchdog_s": 0.5, "nodes": nodes,
    }  # fmt: skip
    return parse_config(config_text(data_dir, [inst]), path="contract.toml")


@module_loop
async def test_connect_is_idempotent_and_close_never_raises(sim: Any) -> None:
    _, url = sim
    cfg = OpcUaConfig(
        name="c",
        kind="opcua",
        url=url,
        nodes=[{"channel": c, "node_id": node_id(c)} for c in CHANNELS],  # type: ignore[misc]
    )
    driver = OpcUaDriver(cfg, SystemClock())
    assert driver.streaming
    assert [c for c, _ in driver.channels()] == CHANNELS
    first = await driver.connect()
    again = await driver.connect()
    assert again is first
    rows = await driver.read()
    assert rows
    assert {r.instrument for r in rows} == {"c"}
    await driver.close()
    await driver.close()
    # And it connects again after a close, as the supervisor does after every failure.
    await driver.connect()
    assert await driver.read()
    await driver.close()


@module_loop
async def test_server_restart_gap_recorded_and_recovered_within_backoff_cap(sim: Any, data_dir: Path) -> None:
    simulator, url = sim
    daemon = Daemon(daemon_config(data_dir, url))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 30)
    sup = daemon.supervisors[0]
    connects = sup.connects
    restart = asyncio.create_task(simulator.restart(down_s=2.5))
    started = time.monotonic()
    await wait_until(lambda: sup.last_error is not None, timeout=5)
    detected_after = time.monotonic() - started
    await restart
    back = time.monotonic()
    await wait_until(lambda: sup.connects > connects, timeout=10)
    reconnected_after = time.monotonic() - back
    count = sup.readings
    await wait_until(lambda: sup.readings >= count + 30)
    daemon.request_stop()
    await task

    assert detected_after < 2.0  # the socket closes: no waiting for a timeout
    assert reconnected_after <= CAP_S + 1.0  # backoff cap plus connect time and scheduling slack
    assert sup.reconnects >= 1
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["instrument"] == "synth-ua"]
        kinds = [e["kind"] for e in r.events() if e["instrument"] == "synth-ua"]
    assert kinds.count("connected") >= 2
    assert "disconnected" in kinds
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert {x["reason"] for x in bad} <= {"disconnected", "connect_failed", "timeout"}
    assert all(x["value"] is None for x in bad)
    # Every mapped channel has its gap recorded, not just the ones that happened to change.
    assert {x["channel"] for x in bad} == set(CHANNELS)
    first_bad, last_bad = rows.index(bad[0]), rows.index(bad[-1])
    assert any(x["quality"] == Quality.GOOD for x in rows[:first_bad])
    after = [x for x in rows[last_bad:] if x["quality"] == Quality.GOOD]
    assert {x["channel"] for x in after} >= {"reactor_temp", "reactor_pressure"}
    seqs = [x["seq"] for x in rows]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    acq = [x["acq_ns"] for x in rows]
    assert acq == sorted(acq)
