"""Bounded, honest shutdown: order, the forwarders' final drain, and the hard bound."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daq import supervision
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.forward.service import ForwardService
from daq.supervision import EXIT_TASK_FAILED
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests import proc
from tests.helpers import config_text, toml_table, wait_until
from tests.test_forward import wait_server_matches
from tests.victoria import Victoria, victoria_server


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    yield from victoria_server(tmp_path)


def _sink(url: str, **extra: object) -> str:
    settings = {"name": "central", "kind": "influxdb", "url": url, "org": "o", "bucket": "b",
                "batch_size": 5000, "max_age_s": 30.0, "precision": "ms", **extra}  # fmt: skip
    return toml_table("sinks", settings)


def _with_sink(data_dir: Path, inst: list[dict[str, Any]], sink: str) -> str:
    # A cell forwarding to a store names its site and cell.
    return config_text(data_dir, inst, sink).replace("[daemon]\n", '[daemon]\nsite = "s"\ncell = "c"\n', 1)


def _count(data_dir: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _readings_or_none(data_dir: Path) -> bool:
    try:
        return _count(data_dir, "SELECT COUNT(*) FROM readings") > 0
    except sqlite3.Error:  # not created yet
        return False


async def test_a_clean_stop_forwards_everything_committed_once(data_dir: Path, vm: Victoria) -> None:
    # max_age_s = 30: nothing leaves before the stop, so everything goes in the final drain,
    # including the readings the supervisors commit while stopping.
    sim = await Vdc404Simulator(options={"interval_s": "0.02"}).serve("tcp://127.0.0.1:0")
    inst = [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}]
    daemon = Daemon(parse_config(_with_sink(data_dir, inst, _sink(vm.url)), path="t.toml"))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set() and daemon.supervisors[0].readings > 30, timeout=30)
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    svc = daemon.services["forward"]
    assert isinstance(svc, ForwardService)
    fwd = svc.forwarders[0]
    committed = _count(data_dir, "SELECT COUNT(*) FROM readings")
    assert committed > 30
    assert fwd.pending == 0
    assert fwd.points_written == committed, "every point acknowledged once"
    assert fwd.retries == 0
    assert fwd.requests == 1, "one batch, sent once"
    await wait_server_matches(vm, data_dir)  # the server holds exactly the journal
    assert _count(data_dir, "SELECT COUNT(*) FROM audit WHERE action = 'sink_drain_incomplete'") == 0


async def test_a_stop_that_cannot_drain_is_audited_with_counts(data_dir: Path, vm: Victoria) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02"}).serve("tcp://127.0.0.1:0")
    inst = [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}]
    cfg = parse_config(_with_sink(data_dir, inst, _sink(vm.url)), path="t.toml")
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set() and daemon.supervisors[0].readings > 10, timeout=30)
        vm.stop()  # the sink goes away: the final drain fails at once, no retries
    finally:
        daemon.request_stop()
        began = time.monotonic()
        await task
        took = time.monotonic() - began
        await sim.close()
    assert took < 5.0
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT subject, detail FROM audit WHERE action = 'sink_drain_incomplete'"
        ).fetchall()
    assert len(rows) == 1
    subject, detail = rows[0][0], json.loads(rows[0][1])
    assert subject == "central"
    assert detail["pending"] == _count(data_dir, "SELECT COUNT(*) FROM readings")
    assert detail["forwarded_through_id"] == 0


async def test_sigterm_ends_a_hung_daemon_within_the_bound(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The event loop blocks for good as the stop begins: only the hard bound can end it.
    monkeypatch.setenv(supervision.FAULT_ENV, "hang:shutdown")
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    cfg = data_dir.parent / "cell.toml"
    inst = [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}]
    cfg.write_text(config_text(data_dir, inst).replace("[daemon]\n", "[daemon]\nshutdown_timeout_s = 2\n", 1))
    try:
        p = await asyncio.to_thread(proc.spawn, "run", "--config", str(cfg))
        await wait_until(lambda: _readings_or_none(data_dir), timeout=30)
        began = time.monotonic()
        code, _, err = await asyncio.to_thread(proc.stop, p, signal.SIGTERM, 30)
        took = time.monotonic() - began
    finally:
        await sim.close()
    assert code == EXIT_TASK_FAILED, err[-2000:]
    assert 2.0 <= took < 4.0
    assert '"shutdown exceeded its bound; exiting now"' in err
    assert os.path.exists(data_dir / "journal.sqlite3")
