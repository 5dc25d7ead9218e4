"""Resource limits of the local API: it can never starve acquisition (daq.api.listener)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from daq.api.server import ApiService
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests import proc
from tests.helpers import config_text, free_port, wait_until

IDLE_SOCKETS = 1100


def _readings(data_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0


def _healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        with contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _limit_child_files() -> None:
    # The daemon keeps the usual default of 1024 descriptors, as on a stock system.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


@pytest.mark.slow
async def test_idle_sockets_leave_acquisition_and_healthz_working(data_dir: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_SOCKETS + 500
    if soft < want:  # this test process holds the idle sockets itself
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096, hard)
        )
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = data_dir.parent / "cell.toml"
    inst = [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}]
    cfg.write_text(config_text(data_dir, inst, f"[api]\nport = {port}\n"))
    socks: list[socket.socket] = []
    try:
        p = await asyncio.to_thread(proc.spawn, "run", "--config", str(cfg), preexec_fn=_limit_child_files)
        await wait_until(lambda: _readings(data_dir) > 5, timeout=30)
        assert await asyncio.to_thread(_healthz, url) == 200
        socks = await asyncio.to_thread(_open_idle, port, IDLE_SOCKETS)
        before = await asyncio.to_thread(_readings, data_dir)
        began = time.monotonic()
        assert await asyncio.to_thread(_healthz, url) == 200, "healthz answers beside the idle sockets"
        assert time.monotonic() - began < 5
        await wait_until(lambda: _readings(data_dir) > before + 20, timeout=10)
        with urllib.request.urlopen(f"{url}/api/status", timeout=5) as resp:
            status = json.loads(resp.read())
        conns = status["services"]["api"]["connections"]
        assert conns["max_connections"] == 256  # a quarter of 1024
        assert conns["connections"] <= 256
        assert conns["evicted_idle"] > 0
        assert status["instruments"]["dc1"]["state"] == "connected"
        code, _, err = await asyncio.to_thread(proc.stop, p, signal.SIGTERM, 30)
    finally:
        for s in socks:
            s.close()
        await sim.close()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    assert "out of system resource" not in err
    assert len(err) < 200_000, "no log flood"


async def test_silent_connections_are_closed_and_large_bodies_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAQ_TEST_API_TOKEN", "t0ken")
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    extra = '[api]\nport = 0\ntoken_env = "DAQ_TEST_API_TOKEN"\nheader_timeout_s = 0.5\nidle_timeout_s = 1.0\nmax_body_bytes = 2048\n'
    daemon = Daemon(
        parse_config(
            config_text(data_dir, [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}], extra)
        )
    )
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        api = daemon.services["api"]
        assert isinstance(api, ApiService)
        assert api.listener is not None
        port = api.listener.port
        # A client that connects and sends half a request head is closed after header_timeout_s.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        began = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.4 <= time.monotonic() - began < 3
        writer.close()
        assert api.listener.header_timeouts == 1
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{api.url}/api/runs",
                data=b"x" * 4096,
                headers={"X-Actor": "a", "Authorization": "Bearer t0ken"},
            ) as resp:
                assert resp.status == 413
            async with http.get(f"{api.url}/healthz") as resp:
                assert resp.status == 200
    finally:
        daemon.request_stop()
        await task
        await sim.close()


HOG_SCRIPT = """
import asyncio, json, os, sys
from aiohttp import web
from daq import logs
from daq.api.listener import Listener, listening_socket

async def main():
    logs.configure("info")
    runner = web.AppRunner(web.Application())
    await runner.setup()
    listener = Listener(runner.server, listening_socket("127.0.0.1", 0), max_connections=64, header_timeout_s=30)
    accepting = asyncio.create_task(listener.run())
    hog = []
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(listener.port, flush=True)
    await asyncio.sleep(float(sys.argv[1]))  # clients connect now: every accept() fails
    for fd in hog:
        os.close(fd)
    await asyncio.sleep(1.0)
    print(json.dumps(listener.status()), flush=True)
    accepting.cancel()
    await asyncio.gather(accepting, return_exceptions=True)
    listener.close()
    await runner.cleanup()

asyncio.run(main())
"""


def _low_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_accept_backs_off_quietly_when_out_of_descriptors() -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", HOG_SCRIPT, "2.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_files,
    )
    assert p.stdout is not None
    port = int(p.stdout.readline())
    clients = _open_idle(port, 5)  # queued by the kernel; accept() fails with EMFILE meanwhile
    try:
        out, err = p.communicate(timeout=30)
    finally:
        for s in clients:
            s.close()
    assert p.returncode == 0, err[-2000:]
    status = json.loads(out.strip().splitlines()[-1])
    assert status["accept_failures"] >= 1
    assert status["accepted"] == 5, "the queued clients are taken once descriptors are free"
    assert err.count("api cannot accept connections; backing off") == 1, err[-2000:]
    assert err.count("api accepts connections again") == 1
    assert "Traceback" not in err
    assert "out of system resource" not in err
