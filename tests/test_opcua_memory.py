"""The OPC UA driver over an in-memory link, against the simulator's real asyncua server.

The driver's link factory hands asyncua's client protocol a transport joined in memory
(:func:`daq.transport.join`) to an ``OPCUAProtocol`` made by the running server's own
factory: the real client (secure channel, session, subscription, publish loop) and the real
server run, only the socket is replaced. The same scenarios run over real sockets in
tests/test_opcua_driver.py, test_opcua_contract.py and test_opcua_supervised.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from daq.clock import SystemClock
from daq.journal import JournalReader
from daq.model import EventKind, Quality, Reason
from daq.transport import MemoryTransport, join
from drivers.opcua import OpcUaConfig, OpcUaDriver
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from tests.helpers import collect, supervised, wait_until

CHANNELS = ["reactor_temp", "door_closed", "step_number"]


class MemoryServer:
    """Connections to the simulator's asyncua server in memory; the server's own factory
    makes its side of each. Refused while the server is not serving (a restart)."""

    def __init__(self, sim: SynthOpcUaSimulator):
        self.sim = sim
        #: The server's end of each connection made, in order.
        self.server_ends: list[MemoryTransport] = []

    async def __call__(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        server = self.sim.server
        bserver = server.bserver if server is not None else None
        listening = bserver._server if bserver is not None else None
        if bserver is None or listening is None or not listening.is_serving():
            raise ConnectionRefusedError(f"{host}:{port}: the in-memory server is not serving")
        client = protocol_factory()
        client_end, server_end = join(client, bserver._make_protocol(), "memory://opcua")
        self.server_ends.append(server_end)
        return client_end, client


def memory_config(**extra: Any) -> OpcUaConfig:
    # The URL is never resolved or opened: the link factory joins the client in memory.
    fields: dict[str, Any] = {
        "name": "plc", "kind": "opcua", "url": "opc.tcp://plc.invalid:4840",
        "nodes": [{"channel": c, "node_id": node_id(c)} for c in CHANNELS],
        "backoff_initial_s": 0.1, "backoff_cap_s": 0.5,
    }  # fmt: skip
    fields.update(extra)
    return OpcUaConfig(**fields)


#: One server for the module (starting asyncua's server takes seconds), in the module's loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[SynthOpcUaSimulator]:
    simulator = SynthOpcUaSimulator(seed=7, options={"update_s": "0.05", "time_scale": "30"})
    listener = await simulator.serve("opc.tcp://127.0.0.1:0")
    server = simulator.server
    assert server is not None
    yield simulator
    await listener.close()
    # A session with a subscription outlives a dropped connection (Part 4, 6.7) until its
    # timeout, and asyncua's server.stop() leaves such sessions running: end them here.
    sessions: dict[Any, Any] = server.iserver._external_sessions
    for session in list(sessions.values()):
        await session.close_session(True)


@module_loop
async def test_a_subscription_and_a_poll_over_the_in_memory_link(sim: SynthOpcUaSimulator) -> None:
    link = MemoryServer(sim)
    sub = OpcUaDriver(memory_config(), SystemClock(), link_factory=link)
    info = await sub.connect()
    try:
        rows = await collect(sub, lambda rs: {r.channel for r in rs} == set(CHANNELS) and len(rs) >= 10)
    finally:
        await sub.close()
    poll = OpcUaDriver(memory_config(mode="poll"), SystemClock(), link_factory=link)
    await poll.connect()
    try:
        polled = await poll.read()
    finally:
        await poll.close()
    assert "Synthesis simulator" in info.model
    assert all(r.quality is Quality.GOOD for r in rows)
    assert [r.channel for r in polled] == CHANNELS
    assert all(r.quality is Quality.GOOD for r in polled)
    # Each driver's connection was one in-memory pair with the server's own protocol.
    assert len(link.server_ends) == 2


@module_loop
async def test_a_server_gone_silent_is_stale_by_the_supervisors_limit(
    sim: SynthOpcUaSimulator, tmp_path: Path
) -> None:
    # The watchdog and the request timeout are long: only the keep-alives' silence can tell.
    cfg = memory_config(keepalive_s=0.2, stale_after_s=0.6, watchdog_s=30.0, request_timeout_s=3.0,
                        backoff_initial_s=5.0, backoff_cap_s=5.0)  # fmt: skip
    link = MemoryServer(sim)
    async with supervised(OpcUaDriver(cfg, SystemClock(), link_factory=link), tmp_path) as sup:
        await wait_until(lambda: sup.readings >= 10, timeout=10)
        # The server's answers stop reaching the client; the connection stays open.
        link.server_ends[-1].peer = None
        silent_at = asyncio.get_running_loop().time()
        # Noticed when the gap is recorded (closing the hung session then takes its time).
        await wait_until(lambda: sup.last_error is not None, timeout=5)
        noticed = asyncio.get_running_loop().time() - silent_at
    assert 0.4 <= noticed < 2.0
    with JournalReader(tmp_path) as r:
        events = r.events()
        rows = r.readings()
    (lost,) = [e for e in events if e["kind"] == EventKind.DISCONNECTED]
    assert lost["detail"]["reason"] == Reason.TIMEOUT
    assert lost["detail"]["error"] == "plc: no publish response (data or keep-alive) for 0.6 s"
    gaps = [x for x in rows if x["quality"] == Quality.BAD]
    assert sorted(x["channel"] for x in gaps) == sorted(CHANNELS)


@module_loop
async def test_a_server_restart_over_the_in_memory_link_is_a_gap_and_a_reconnect(
    sim: SynthOpcUaSimulator, tmp_path: Path
) -> None:
    link = MemoryServer(sim)
    async with supervised(OpcUaDriver(memory_config(), SystemClock(), link_factory=link), tmp_path) as sup:
        await wait_until(lambda: sup.readings >= 10, timeout=10)
        await sim.restart(down_s=0.5)
        await wait_until(lambda: sup.connects >= 2, timeout=10)
        before = sup.readings
        await wait_until(lambda: sup.readings >= before + 10, timeout=10)
    assert len(link.server_ends) >= 2
    with JournalReader(tmp_path) as r:
        events = r.events()
        rows = r.readings()
    kinds = [e["kind"] for e in events]
    assert kinds.count(EventKind.CONNECTED) >= 2
    assert EventKind.DISCONNECTED in kinds
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert set(CHANNELS) <= {x["channel"] for x in bad}
    good_after = [x for x in rows if x["quality"] == Quality.GOOD and x["acq_ns"] > bad[-1]["acq_ns"]]
    assert len(good_after) >= 10
