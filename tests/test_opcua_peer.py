"""The OPC UA driver against an independent server: node-opcua (Node.js), over a socket.

The driver and the project's simulator both use asyncua; this server is another
implementation (``tests/peers/opcua-node/server.js``, installed by ``npm ci`` there, as
``.ci/run`` does). One server process serves the whole run (under xdist, started by the controller and shared by the
workers, tests/opcua_peer_server.py) or the module: it takes seconds to start.
Tests that need it fail, never skip, when Node.js or the npm packages are missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from daq.clock import SystemClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality, Reading
from drivers.opcua import OpcUaConfig, OpcUaDriver
from tests import opcua_peer_server
from tests.helpers import collect, config_text, free_port, wait_until

STEPS = {"idle": 0.0, "heat": 1.0, "cool": 2.0}


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = opcua_peer_server.from_run()  # started by the xdist controller for the whole run
    try:
        if server is None:
            server = opcua_peer_server.start(tmp_path_factory.mktemp("opcua-peer"), free_port())
        server.wait_ready()
    except opcua_peer_server.PeerError as exc:
        if server is not None:
            server.stop()
        pytest.fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()  # stops only a peer this process started


def nid(name: str) -> str:
    return f"ns=1;s=Peer.{name}"


def peer_config(url: str, nodes: list[dict[str, Any]], **extra: Any) -> OpcUaConfig:
    fields: dict[str, Any] = {"name": "peer", "kind": "opcua", "url": url, "nodes": nodes}
    fields.update(extra)
    return OpcUaConfig(**fields)


def each(rows: list[Reading], channels: set[str], n: int) -> bool:
    return all(sum(r.channel == c for r in rows) >= n for c in channels)


NODES: list[dict[str, Any]] = [
    {"channel": "temp", "node_id": nid("temp"), "unit": "degC"},
    {"channel": "count", "browse_path": "/1:Peer/1:count"},
    {"channel": "flag", "node_id": nid("flag")},
    {"channel": "step", "browse_path": "/1:Peer/1:step", "states": STEPS},
]


async def test_subscription_by_node_id_and_browse_path(peer: str) -> None:
    driver = OpcUaDriver(peer_config(peer, NODES, sampling_interval_ms=50), SystemClock())
    info = await driver.connect()
    try:
        rows = await collect(driver, lambda rs: each(rs, {"temp", "count", "flag", "step"}, 5), 15.0)
    finally:
        await driver.close()
    assert "node-opcua peer" in info.model
    assert "revised_sampling_ms" not in info.extra
    assert all(r.quality is Quality.GOOD for r in rows), [r for r in rows if r.quality is not Quality.GOOD]
    temps = [r.value for r in rows if r.channel == "temp"]
    assert all(t is not None and 14.9 < t < 25.1 for t in temps)
    counts = [r.value for r in rows if r.channel == "count"]
    assert None not in counts
    assert counts == sorted(c for c in counts if c is not None)
    assert all(c is not None and float(c).is_integer() for c in counts)
    assert {r.value for r in rows if r.channel == "flag"} <= {0.0, 1.0}
    for r in (r for r in rows if r.channel == "step"):
        assert r.attrs is not None
        assert r.value == STEPS[r.attrs["text"]]
    for r in rows:
        assert r.attrs is not None
        assert r.attrs["source_ns"] is not None
        assert r.device_ns == r.attrs["source_ns"]


async def test_poll_mode_reads_every_node(peer: str) -> None:
    driver = OpcUaDriver(peer_config(peer, NODES, mode="poll", period_s=0.2, timeout_s=0.15), SystemClock())
    await driver.connect()
    try:
        rows = await collect(driver, lambda rs: each(rs, {"temp", "count", "flag", "step"}, 3), 15.0)
    finally:
        await driver.close()
    assert all(r.quality is Quality.GOOD for r in rows)
    values = [r.value for r in rows if r.channel == "count"]
    assert None not in values
    assert values == sorted(v for v in values if v is not None)
    assert len(set(values)) > 1  # each period read anew


async def test_missing_node_and_unresolved_browse_path_are_bad_logged_once_and_listed(peer: str) -> None:
    nodes = [
        {"channel": "temp", "node_id": nid("temp")},
        {"channel": "ghost", "node_id": nid("no_such_node")},
        {"channel": "lost", "browse_path": "/1:Peer/1:no_such_node"},
    ]
    driver = OpcUaDriver(peer_config(peer, nodes, node_retry_s=0.2), SystemClock())
    with structlog.testing.capture_logs() as logs:
        await driver.connect()
        try:
            rows = await collect(driver, lambda rs: sum(r.channel == "ghost" for r in rs) >= 3, 15.0)
            problems = driver.problems()
        finally:
            await driver.close()
    bad = {r.channel: r for r in rows if r.quality is Quality.BAD}
    assert set(bad) == {"ghost", "lost"}
    assert {r.reason for r in bad.values()} == {"node_unavailable"}
    assert any(r.channel == "temp" and r.quality is Quality.GOOD for r in rows)
    assert sorted(e["channel"] for e in logs if e["event"] == "opcua node unavailable") == ["ghost", "lost"]
    assert set(problems["unavailable_nodes"]) == {"ghost", "lost"}
    assert "BadNodeIdUnknown" in problems["unavailable_nodes"]["ghost"]
    assert "BadNoMatch" in problems["unavailable_nodes"]["lost"]


async def test_a_sampling_interval_the_server_revised_is_recorded(peer: str) -> None:
    nodes = [{"channel": "slow", "node_id": nid("slow")}, {"channel": "temp", "node_id": nid("temp")}]
    driver = OpcUaDriver(peer_config(peer, nodes, sampling_interval_ms=100), SystemClock())
    try:
        info = await driver.connect()
    finally:
        await driver.close()
    # The node's minimumSamplingInterval is 500 ms: the server revised 100 ms up to it.
    assert info.extra["revised_sampling_ms"] == {"slow": 500.0}


async def test_the_daemon_keeps_acquiring_from_the_peer(peer: str, data_dir: Path) -> None:
    """node-opcua leaves the server timestamp of data-change notifications null: the
    readings are journaled all the same, and keep coming."""
    inst = {"name": "peer", "kind": "opcua", "url": peer, "sampling_interval_ms": 50,
            "nodes": [{"channel": "temp", "node_id": nid("temp"), "unit": "degC"},
                      {"channel": "count", "node_id": nid("count")}]}  # fmt: skip
    daemon = Daemon(parse_config(config_text(data_dir, [inst]), path="test.toml"))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 20, timeout=20
        )
        n = daemon.supervisors[0].readings
        await wait_until(lambda: daemon.supervisors[0].readings >= n + 20, timeout=20)
        status = daemon.status()
    finally:
        daemon.request_stop()
        await task
    assert status["instruments"]["peer"]["problems"] == {}
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings(limit=100_000) if x["instrument"] == "peer"]
    assert len(rows) >= 40
    assert all(x["quality"] == Quality.GOOD for x in rows)
