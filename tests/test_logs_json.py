"""The daemon's log in JSON mode is one JSON object per line, library records included.

asyncua and pymodbus log through the standard ``logging`` tree ("Publish iteration crashed"
with a traceback, "close_secure_channel was called..."); ``daq.logs`` routes that tree through
structlog's renderer, so nothing plain or multi-line reaches a log collector expecting JSON.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from simulators.synth_opcua import node_id
from tests.helpers import free_port
from tests.proc import spawn, stop
from tests.test_crash import wait_started


def _journal_rows(db: Path, instrument: str) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(
            conn.execute("SELECT COUNT(*) FROM readings WHERE instrument = ?", (instrument,)).fetchone()[0]
        )
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _events(db: Path, instrument: str, kind: str) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM events WHERE instrument = ? AND kind = ?", (instrument, kind)
            ).fetchone()[0]
        )
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_library_logs_of_a_server_that_dies_are_json_lines(tmp_path: Path) -> None:
    port = free_port()
    sim = spawn(
        "simulate", "synth-opcua", "--listen", f"opc.tcp://127.0.0.1:{port}", "--set", "update_s=0.05"
    )
    assert sim.stdout is not None
    line = sim.stdout.readline()
    assert "listening on" in line, line
    data_dir = tmp_path / "data"
    cfg = tmp_path / "cell.toml"
    cfg.write_text(
        f'[daemon]\ndata_dir = "{data_dir}"\nlog_level = "info"\n\n[journal]\ncommit_window_s = 0.02\n\n'
        "[api]\nenabled = false\n\n"
        '[[instruments]]\nname = "synth1"\nkind = "opcua"\n'
        f'url = "opc.tcp://127.0.0.1:{port}"\n'
        "watchdog_s = 0.3\nkeepalive_s = 0.2\nstale_after_s = 1.0\nrequest_timeout_s = 1.0\n"
        "backoff_initial_s = 0.2\nbackoff_cap_s = 0.5\n"
        f'nodes = [{{channel = "reactor_temp", node_id = "{node_id("reactor_temp")}", unit = "degC"}}]\n'
    )
    db = data_dir / "journal.sqlite3"
    daemon = spawn("run", "--config", str(cfg))
    try:
        wait_started(db, 1)
        deadline = time.monotonic() + 30
        while _journal_rows(db, "synth1") < 5:
            assert time.monotonic() < deadline, "no readings from the OPC UA simulator"
            time.sleep(0.05)
        # The server vanishes mid-session: asyncua's publish loop, watchdog and secure
        # channel all log about it, some with tracebacks.
        sim.send_signal(signal.SIGKILL)
        sim.communicate(timeout=10)
        # Until the daemon has journaled the loss and tried to reconnect (the library logs
        # the vanished session and the refused connection on the way).
        deadline = time.monotonic() + 30
        while _events(db, "synth1", "disconnected") < 1 or _events(db, "synth1", "reconnecting") < 1:
            assert time.monotonic() < deadline, "the daemon did not notice the server was gone"
            time.sleep(0.05)
    finally:
        if sim.poll() is None:
            stop(sim, signal.SIGKILL)
        code, _, err = stop(daemon)
    assert code == 0, err
    lines = err.splitlines()
    assert lines
    records = []
    for n, text in enumerate(lines, 1):
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError:
            raise AssertionError(f"stderr line {n} is not JSON: {text!r}\n--- stderr ---\n{err}") from None
    assert all(isinstance(r, dict) and "event" in r and "level" in r and "timestamp" in r for r in records)
    # The library's own records came through, as JSON, with their logger's name.
    libraries = [r for r in records if str(r.get("logger", "")).startswith("asyncua")]
    assert libraries, err
    assert any(r["event"] == "instrument unavailable" for r in records), err
