"""Gap records of Modbus and OPC UA instruments: one per cause, stamped when it was detected.

Over the real protocols: a pymodbus server whose unit never answers, and an asyncua server
behind a relay that stops passing bytes (a hung PLC: the TCP connection stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from tests.helpers import config_text, make_config, wait_until

MAP = Path(__file__).resolve().parents[1] / "config" / "synth-modbus-map.toml"


async def test_max_consecutive_timeouts_writes_one_gap_record_per_channel_and_poll(data_dir: Path) -> None:
    sim = SynthModbusSimulator(faults={"silent_unit": 1})
    listener = await sim.serve("tcp://127.0.0.1:0")
    inst = {
        "name": "synth", "kind": "modbus", "port": listener.url, "map_file": str(MAP),
        "period_s": 0.2, "timeout_s": 0.15, "max_consecutive_timeouts": 2,
        "backoff_initial_s": 0.05, "backoff_cap_s": 0.05,
    }  # fmt: skip
    daemon = Daemon(make_config(data_dir, [inst]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].reconnects >= 2)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings(limit=100_000) if x["channel"] == "reactor_temp"]
        disconnects = [e for e in r.events() if e["kind"] == "disconnected"]
    assert rows
    assert all(x["quality"] == Quality.BAD and x["reason"] == "timeout" for x in rows)
    assert disconnects
    # Each timed-out poll is one gap record: never a second row right beside it for the
    # reconnect that the timeout caused (they came 0.5 ms apart).
    times = [x["acq_ns"] for x in rows]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 40_000_000, gaps
    assert any("polls in a row timed out" in (x["attrs"] or {}).get("error", "") for x in rows)


class _FreezingRelay:
    """TCP relay in front of a server; ``freeze()`` stops passing bytes either way while
    keeping every connection open: to the client, the server hangs."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.frozen = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.frozen.set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.frozen.is_set():
                    continue  # swallowed: the hung server neither answers nor closes
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for coro in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            t = asyncio.create_task(coro, name="test:relay")
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def hung_opcua_server() -> AsyncIterator[tuple[str, _FreezingRelay]]:
    sim = SynthOpcUaSimulator(seed=3, options={"update_s": "0.05"})
    listener = await sim.serve("opc.tcp://127.0.0.1:0")
    relay = _FreezingRelay(int(listener.url.rsplit(":", 1)[1]))
    port = await relay.start()
    try:
        yield f"opc.tcp://127.0.0.1:{port}", relay
    finally:
        await relay.close()
        await listener.close()
        # The session the client could not close stays open in the stopped asyncua server
        # until its timeout: end its loops, which nothing else would.
        orphans = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").startswith(
                ("InternalSession.", "InternalSubscription.")
            )
        ]
        for t in orphans:
            t.cancel()
        await asyncio.gather(*orphans, return_exceptions=True)


@pytest.mark.slow
async def test_a_hung_opcua_server_is_stamped_when_detected_not_after_close_gave_up(data_dir: Path) -> None:
    async with hung_opcua_server() as (url, relay):
        inst: dict[str, Any] = {
            "name": "plc", "kind": "opcua", "url": url, "keepalive_s": 0.2, "stale_after_s": 0.6,
            "watchdog_s": 0.2, "request_timeout_s": 3.0, "backoff_initial_s": 5.0, "backoff_cap_s": 5.0,
            "nodes": [{"channel": "reactor_temp", "node_id": node_id("reactor_temp"), "unit": "degC"}],
        }  # fmt: skip
        text = config_text(data_dir, [inst])
        daemon = Daemon(parse_config(text, path="test.toml"))
        task = asyncio.create_task(daemon.run())
        try:
            await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 5)
            sup = daemon.supervisors[0]
            frozen_ns = time.time_ns()
            relay.freeze()
            # Detected by the stale keep-alives (0.6 s); closing the hung session then waits
            # for request_timeout_s (3 s) before giving up.
            await wait_until(lambda: sup.state.value == "backoff", timeout=15)
        finally:
            daemon.request_stop()
            await task
    with JournalReader(data_dir) as r:
        bad = [x for x in r.readings(limit=100_000) if x["quality"] == Quality.BAD]
        lost = [e for e in r.events() if e["kind"] == "disconnected"]
    assert bad, "no gap record"
    assert lost
    first_gap_ns = min(x["acq_ns"] for x in bad)
    # Within the detection time (stale_after_s plus the loop's wake-up), far from 0.6 + 3 s.
    assert first_gap_ns - frozen_ns < 2.0e9, (first_gap_ns - frozen_ns) / 1e9
    assert lost[0]["ts_ns"] - frozen_ns < 2.0e9
