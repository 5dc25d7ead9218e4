"""Fault containment: every long-lived task is supervised (daq.supervision).

Chaos over the real daemon: an exception is injected into each long-lived component in turn
through the test seam (:func:`daq.supervision.arm`, or ``DAQ_TEST_FAULTS`` for a process).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from daq import supervision
from daq.api.server import ApiService
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.supervision import EXIT_TASK_FAILED, Policy, TaskTree
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests import proc
from tests.helpers import config_text, toml_table, wait_until
from tests.tlc_helpers import METHOD_TOML
from tests.victoria import Victoria, victoria_server


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    yield from victoria_server(tmp_path)


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    supervision.disarm()
    yield
    supervision.disarm()


def _sink(url: str) -> str:
    settings = {"name": "central", "kind": "influxdb", "url": url, "org": "o", "bucket": "b",
                "batch_size": 500, "max_age_s": 0.1, "backoff_initial_s": 0.05, "backoff_cap_s": 0.5,
                "precision": "ms"}  # fmt: skip
    return toml_table("sinks", settings)


def _events(data_dir: Path, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT instrument, detail FROM events WHERE kind = ?", (kind,)).fetchall()
    return [{"instrument": i, **json.loads(d)} for i, d in rows]


def _readings(data_dir: Path, instrument: str) -> int:
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM readings WHERE instrument = ?", (instrument,)).fetchone()[0]
        )


async def test_each_component_fails_in_turn_and_is_restarted(
    data_dir: Path, vm: Victoria, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_port: int
) -> None:
    # A notify socket stands in for systemd, so the notifier runs too.
    notify = tmp_path / "n.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    sims = [await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0") for _ in "ab"]
    instruments = [
        {
            "name": name,
            "kind": "veenstra-vdc404",
            "port": sim.url,
            "backoff_initial_s": 0.05,
            "backoff_cap_s": 0.2,
        }
        for name, sim in zip("ab", sims, strict=True)
    ]
    instruments.append(
        {"name": "tlc1", "kind": "rtlc-scanner", "port": f"socket://127.0.0.1:{dead_port}",
         "method": "lu-psma-itlc", "scan_every_s": 60.0, "backoff_initial_s": 0.5, "backoff_cap_s": 1.0}
    )  # fmt: skip
    extra = METHOD_TOML + "\n[api]\nport = 0\n\n" + _sink(vm.url) + "\n[clock]\ncheck_every_s = 0.05\n"
    text = config_text(data_dir, instruments, extra).replace(
        "[daemon]\n", '[daemon]\nsite = "s"\ncell = "c"\n', 1
    )
    cfg = parse_config(text, path="chaos.toml")
    daemon = Daemon(cfg)
    daemon.tasks.initial_s = 0.05
    task = asyncio.create_task(daemon.run(), name="chaos-daemon")
    components = ["supervisor:a", "forwarder:central", "api", "tlc:tlc1", "clock", "systemd", "stall-watch"]
    try:
        await wait_until(lambda: daemon.ready.is_set() or task.done(), timeout=30)
        api = daemon.services["api"]
        assert isinstance(api, ApiService)
        for component in components:
            assert daemon.tasks.records[component].policy is Policy.RESTART
            b_before = daemon.supervisor("b").readings
            with capture_logs() as logs:
                supervision.arm(component)
                rec = daemon.tasks.records[component]
                await wait_until(lambda r=rec: r.failures == 1 and r.restarts == 1 and r.state == "running")  # type: ignore[misc]
                await wait_until(lambda n=b_before: daemon.supervisor("b").readings > n + 5)  # type: ignore[misc]
            failed = [e for e in logs if e["event"] == "task failed" and e["component"] == component]
            assert len(failed) == 1, f"{component}: logged once"
            assert failed[0]["exc_info"][0] is supervision.InjectedFault, "with its traceback"
            assert rec.last_error == f"InjectedFault: fault injected into {component}"
        await wait_until(lambda: api.url is not None)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{api.url}/api/status") as resp:
                status = await resp.json()
            async with http.get(f"{api.url}/healthz") as resp:
                health = await resp.json()
            async with http.get(f"{api.url}/metrics") as resp:
                metrics = await resp.text()
        for component in components:
            assert status["tasks"][component]["failures"] == 1
            assert health["task_failures"][component] == 1
            assert f'daq_task_failures_total{{component="{component}",policy="restart"}} 1' in metrics
            assert any(a["subject"] == f"task {component}" for a in status["alarms"])
        assert "daq_task_up{" in metrics
        # The restarted parts work again: instrument a journals, the forwarder delivers.
        a_before = daemon.supervisor("a").readings
        await wait_until(lambda: daemon.supervisor("a").readings > a_before + 5)
        fwd = daemon.services["forward"].forwarders[0]  # type: ignore[attr-defined]
        await wait_until(lambda: fwd.pending < 50 and fwd.points_written > 0)
    finally:
        daemon.request_stop()
        await task
        for sim in sims:
            await sim.close()
        listener.close()
    assert daemon.exit_code == 0
    journaled = {e["component"]: e for e in _events(data_dir, "task_failed")}
    assert set(journaled) == set(components)
    assert journaled["supervisor:a"]["instrument"] == "a"
    assert journaled["api"] == {
        "instrument": "daemon", "component": "api", "exception": "InjectedFault",
        "message": "fault injected into api", "policy": "restart", "failures": 1,
    }  # fmt: skip


def _daemon_process(data_dir: Path, sim_urls: list[str]) -> subprocess.Popen[str]:
    cfg = data_dir.parent / "cell.toml"
    instruments = [
        {"name": n, "kind": "veenstra-vdc404", "port": url} for n, url in zip("ab", sim_urls, strict=True)
    ]
    cfg.write_text(config_text(data_dir, instruments))
    return proc.spawn("run", "--config", str(cfg))


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _journal_ready(data_dir: Path) -> bool:
    try:
        return _readings(data_dir, "b") > 0
    except sqlite3.Error:
        return False


async def test_a_dead_journal_writer_stops_the_process_non_zero(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(supervision.FAULT_ENV, "journal-writer")
    sims = [await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0") for _ in "ab"]
    try:
        p = await asyncio.to_thread(_daemon_process, data_dir, [sim.url for sim in sims])
        _, err = await asyncio.to_thread(p.communicate, timeout=30)
        code = p.returncode
    finally:
        for sim in sims:
            await sim.close()
    # The writer fails at its first wake-up: the daemon stops by itself, non-zero, so that
    # systemd (Restart=on-failure) starts it again.
    assert code == EXIT_TASK_FAILED, err[-3000:]
    failed = [line for line in err.splitlines() if '"task failed"' in line]
    assert len(failed) == 1, err[-3000:]
    entry = json.loads(failed[0])
    assert entry["component"] == "journal-writer"
    assert entry["policy"] == "exit"
    assert "Traceback" in entry["exception"]
    assert "InjectedFault" in entry["exception"]


async def test_a_restarted_supervisor_keeps_the_process_and_sigterm_ends_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(supervision.FAULT_ENV, "supervisor:a")
    sims = [await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0") for _ in "ab"]
    try:
        p = await asyncio.to_thread(_daemon_process, data_dir, [sim.url for sim in sims])
        await asyncio.to_thread(_wait, lambda: _journal_ready(data_dir) and _events(data_dir, "task_failed"))
        a_before = await asyncio.to_thread(_readings, data_dir, "a")
        await asyncio.to_thread(_wait, lambda: _readings(data_dir, "a") > a_before + 5)
        assert p.poll() is None
        began = time.monotonic()
        code, _, err = await asyncio.to_thread(proc.stop, p, signal.SIGTERM, 30)
        took = time.monotonic() - began
    finally:
        for sim in sims:
            await sim.close()
    assert code == 0, err[-3000:]
    assert took < 15.0
    assert [e["component"] for e in _events(data_dir, "task_failed")] == ["supervisor:a"]
    assert sum('"task failed"' in line for line in err.splitlines()) == 1


def test_policy_table_covers_every_family() -> None:
    assert set(supervision.POLICIES) == {
        "journal-writer", "supervisor", "forwarder", "api", "tlc", "clock", "systemd", "stall-watch",
    }  # fmt: skip
    assert supervision.POLICIES["journal-writer"] is Policy.EXIT
    assert all(p is Policy.RESTART for f, p in supervision.POLICIES.items() if f != "journal-writer")


async def test_a_task_that_returns_is_a_failure_and_restarts_with_capped_backoff() -> None:
    runs = 0
    tree = TaskTree(initial_s=0.01, cap_s=0.04)

    async def quits() -> None:
        nonlocal runs
        runs += 1

    with capture_logs() as logs:
        task = tree.spawn("clock", "clock", quits)
        await wait_until(lambda: runs >= 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    delays = [e["delay_s"] for e in logs if e["event"] == "task restarting"]
    assert max(delays) <= 0.04
    assert tree.records["clock"].last_error == "RuntimeError: clock ended unexpectedly"
    assert tree.records["clock"].state == "stopped"


async def test_a_writer_that_stops_for_good_stops_the_daemon_non_zero(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02"}).serve("tcp://127.0.0.1:0")
    cfg = parse_config(config_text(data_dir, [{"name": "a", "kind": "veenstra-vdc404", "port": sim.url}]))
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set() and daemon.supervisor("a").readings > 5, timeout=30)
        journal = daemon.journal
        assert journal is not None
        with capture_logs() as logs:
            # The database connection goes away under the writer: no safe restart exists.
            conn = journal._conn
            assert conn is not None
            await asyncio.get_running_loop().run_in_executor(journal._executor, conn.close)
            began = time.monotonic()
            await asyncio.wait_for(task, 15)  # the daemon stops by itself
        assert time.monotonic() - began < 15
    finally:
        daemon.request_stop()
        await asyncio.gather(task, return_exceptions=True)
        await sim.close()
    assert daemon.exit_code == EXIT_TASK_FAILED
    rec = daemon.tasks.records["journal-writer"]
    assert (rec.state, rec.failures, rec.policy) == ("failed", 1, Policy.EXIT)
    tracebacks = [e for e in logs if e.get("exc_info")]
    assert len(tracebacks) == 1, "the writer's end is logged once, with its traceback"
    assert any(e["event"] == "daemon stopping: a task without a safe restart failed" for e in logs)
