"""kill -9 of ``daq run`` while readings flow: nothing committed is lost or duplicated."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from daq.journal import verify_journal
from tests.helpers import config_text, free_port
from tests.proc import spawn, start_simulator, stop


def wait_started(db: Path, starts: int, timeout: float = 60) -> None:
    """Wait until the journal holds ``starts`` daemon_start audit entries (the daemon is up,
    its signal handlers installed): a fixed sleep is not enough on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                n = conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'daemon_start'").fetchone()[0]
            except sqlite3.Error:
                n = 0
            finally:
                conn.close()
            if n >= starts:
                return
        time.sleep(0.05)
    raise AssertionError(f"daemon start {starts} not seen within {timeout} s")


def wait_readings(db: Path, more_than: int, timeout: float = 30) -> None:
    """Wait until the journal has committed more than ``more_than`` readings (readers see only
    committed rows): readings are flowing, whatever the machine's load."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(committed(db)) > more_than:
                return
        except sqlite3.Error:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not more than {more_than} readings within {timeout} s")
        time.sleep(0.02)


def committed(db: Path) -> dict[int, tuple[str, int, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, instrument, seq, hash FROM readings")
        }
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    port = free_port()
    sim = start_simulator("veenstra-vdc404", port, "--set", "interval_s=0.002")
    data_dir = tmp_path / "data"
    cfg = tmp_path / "cell.toml"
    cfg.write_text(
        config_text(
            data_dir,
            [
                {
                    "name": "dc1",
                    "kind": "veenstra-vdc404",
                    "port": f"socket://127.0.0.1:{port}",
                    "backoff_initial_s": 0.05,
                    "backoff_cap_s": 0.5,
                }
            ],
        )
    )
    db = data_dir / "journal.sqlite3"
    try:
        before: dict[int, tuple[str, int, bytes]] = {}
        for round_ in range(2):
            daemon = spawn("run", "--config", str(cfg))
            wait_started(db, round_ + 1)
            # Killed while it streams: some hundreds of new readings in (a different number each round).
            wait_readings(db, len(before) + 200 + 150 * round_)
            before = committed(db)  # everything visible here has been committed
            assert len(before) > 50
            daemon.send_signal(signal.SIGKILL)
            daemon.communicate(timeout=10)
            assert daemon.returncode == -signal.SIGKILL
        daemon = spawn("run", "--config", str(cfg))
        wait_started(db, 3)
        wait_readings(db, len(before) + 50)  # it went on acquiring after the restart
        code, _, err = stop(daemon)
        assert code == 0, err
        after = committed(db)
    finally:
        stop(sim)
    for rid, row in before.items():
        assert after.get(rid) == row, f"committed reading {rid} changed or vanished"
    seqs = [seq for _, (inst, seq, _) in sorted(after.items()) if inst == "dc1"]
    assert len(seqs) == len(set(seqs)), "duplicated sequence numbers"
    assert seqs == sorted(seqs), "sequence numbers went backwards"
    assert max(seqs) > max(s for inst, s, _ in before.values() if inst == "dc1")
    assert verify_journal(data_dir).ok


@pytest.mark.slow
def test_sigterm_flushes_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    sim = start_simulator("veenstra-vdc404", port, "--set", "interval_s=0.01")
    data_dir = tmp_path / "data"
    cfg = tmp_path / "cell.toml"
    cfg.write_text(
        config_text(
            data_dir, [{"name": "dc1", "kind": "veenstra-vdc404", "port": f"socket://127.0.0.1:{port}"}]
        )
    )
    try:
        daemon = spawn("run", "--config", str(cfg))
        db = data_dir / "journal.sqlite3"
        wait_started(db, 1)
        wait_readings(db, 20)  # stopped while readings flow
        code, _, err = stop(daemon, signal.SIGTERM)
        assert code == 0, err
        first_run = len(committed(db))
        daemon = spawn("run", "--config", str(cfg))
        wait_started(db, 2)
        wait_readings(db, first_run + 10)
        code, _, err = stop(daemon, signal.SIGINT)
        assert code == 0, err
    finally:
        stop(sim)
    conn = sqlite3.connect(data_dir / "journal.sqlite3")
    actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY id")]
    conn.close()
    assert actions.count("daemon_stop") == 2
    assert actions.count("config_loaded") == 2
