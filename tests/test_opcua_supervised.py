"""OPC UA in poll mode is a polled driver like any other, over the simulator's real asyncua server.

The supervisor owns its poll grid, deadline, timeouts and reconnects: a server that answers
later than ``timeout_s`` is counted as timeouts, and after ``max_consecutive_timeouts`` polls
in a row the supervisor drops the session and reconnects; each poll's lateness against its
grid slot is recorded as for every polled instrument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daq.clock import SystemClock
from daq.configfile.load import JournalSection
from daq.journal import Journal, JournalReader
from daq.model import EventKind, Quality, Reason
from daq.supervisor import State, Supervisor
from drivers.base import Capability
from drivers.opcua import OpcUaConfig, OpcUaDriver
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from tests.helpers import running, wait_until

CHANNELS = ["reactor_temp", "door_closed"]


def poll_config(url: str, **extra: Any) -> OpcUaConfig:
    fields: dict[str, Any] = {
        "name": "synth-poll", "kind": "opcua", "url": url, "mode": "poll",
        "nodes": [{"channel": c, "node_id": node_id(c)} for c in CHANNELS],
    }  # fmt: skip
    fields.update(extra)
    return OpcUaConfig(**fields)


async def test_poll_mode_is_polled_on_the_supervisors_grid(tmp_path: Path) -> None:
    sim = SynthOpcUaSimulator(seed=3, options={"update_s": "0.05"})
    listener = await sim.serve("opc.tcp://127.0.0.1:0")
    journal = await Journal.open(tmp_path, clock=SystemClock(), settings=JournalSection())
    driver = OpcUaDriver(poll_config(listener.url, period_s=0.1, timeout_s=0.08), SystemClock())
    assert driver.capability is Capability.POLLED
    assert not driver.streaming
    sup = Supervisor(driver, journal, SystemClock())
    try:
        async with running(sup):
            await wait_until(lambda: len(sup.poll_lateness_ns) >= 8, timeout=10)
    finally:
        await journal.close()
        await listener.close()
    assert sup.timeouts == 0
    assert sup.readings >= 2 * 7
    # Lateness is measured against the supervisor's slots: small, never negative.
    assert all(0 <= late < 100_000_000 for late in sup.poll_lateness_ns)
    with JournalReader(tmp_path) as r:
        rows = r.readings()
    good = [x for x in rows if x["quality"] == Quality.GOOD]
    assert {x["channel"] for x in good} == set(CHANNELS)


@pytest.mark.slow
async def test_poll_mode_honours_max_consecutive_timeouts(tmp_path: Path) -> None:
    # Every response is held back 0.4 s by the simulator's relay: connecting is slow but
    # succeeds, every poll (0.15 s allowed) times out.
    sim = SynthOpcUaSimulator(seed=4, faults={"delay_s": 0.4}, options={"update_s": "0.1"})
    listener = await sim.serve("opc.tcp://127.0.0.1:0")
    journal = await Journal.open(tmp_path, clock=SystemClock(), settings=JournalSection())
    cfg = poll_config(
        listener.url, period_s=0.3, timeout_s=0.15, max_consecutive_timeouts=2,
        connect_timeout_s=8.0, backoff_initial_s=5.0, backoff_cap_s=5.0,
    )  # fmt: skip
    sup = Supervisor(OpcUaDriver(cfg, SystemClock()), journal, SystemClock())
    try:
        async with running(sup):
            await wait_until(lambda: sup.state is State.BACKOFF, timeout=15)
    finally:
        await journal.close()
        await listener.close()
    assert sup.connects == 1
    assert sup.timeouts == 2
    with JournalReader(tmp_path) as r:
        rows = r.readings()
        events = r.events()
    lost = [e for e in events if e["kind"] == EventKind.DISCONNECTED]
    assert len(lost) == 1
    assert lost[0]["detail"]["reason"] == Reason.TIMEOUT
    assert "2 polls in a row timed out" in lost[0]["detail"]["error"]
    # The first timeout is one gap record per channel; the second is the reconnect's gap.
    timeouts = [x for x in rows if x["reason"] == Reason.TIMEOUT]
    assert sorted(x["channel"] for x in timeouts) == sorted(CHANNELS * 2)
    assert not [x for x in rows if x["quality"] == Quality.GOOD]
