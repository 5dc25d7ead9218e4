"""``daq sinks rewind`` and ``daq sinks forget`` over the real command and a real VictoriaMetrics."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import subprocess
import sys
from pathlib import Path

from daq.clock import SystemClock
from daq.journal import Journal, JournalReader
from daq.journal.journal import connect
from daq.journal.lock import take_lock
from daq.journal.verify import verify_journal
from daq.runs.retention import plan
from tests.test_forward import drain, fill, sink_toml, vm, wait_server_matches
from tests.victoria import Victoria

__all__ = ["vm"]  # the VictoriaMetrics fixture


def daq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq", *args], capture_output=True, text=True, timeout=60, check=False
    )


def audit_of(data_dir: Path, action: str) -> list[dict[str, object]]:
    with JournalReader(data_dir) as r:
        return [a for a in r.audit() if a["action"] == action]


async def test_rewind_refills_a_store_that_lost_acknowledged_points(data_dir: Path, vm: Victoria) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    await fill(journal, 200, channels=("activity",))
    await journal.close()
    await drain(data_dir, vm.url)
    await wait_server_matches(vm, data_dir)
    # The store crashes and comes back empty: every point it had acknowledged is gone.
    await asyncio.to_thread(vm.stop)
    shutil.rmtree(vm.storage)
    await asyncio.to_thread(vm.start)
    assert vm.count() == 0
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=1000)
        assert r.sink_cursors()["central"]["last_id"] == 200
    since = rows[120]
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    to = (epoch + datetime.timedelta(microseconds=since["acq_ns"] // 1000)).isoformat()

    dry = daq("sinks", "rewind", "central", "--to", to, "--data-dir", str(data_dir), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout
    assert not audit_of(data_dir, "sink_rewind")

    lock = take_lock(data_dir)  # a daemon is running: refused, nothing changed
    try:
        busy = daq("sinks", "rewind", "central", "--to", to, "--data-dir", str(data_dir))
    finally:
        lock.close()
    assert busy.returncode == 1
    assert "daemon is running" in busy.stderr
    assert "Traceback" not in busy.stderr

    done = daq(
        "sinks", "rewind", "central", "--to", to, "--data-dir", str(data_dir),
        "--reason", "store restored empty", "--actor", "qa",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"rewound from id 200 to {since['id'] - 1}" in done.stdout
    (entry,) = audit_of(data_dir, "sink_rewind")
    assert entry["subject"] == "central"
    assert entry["actor"] == "qa"
    assert entry["detail"] == {
        "from_id": 200, "to_id": since["id"] - 1, "to_ns": since["acq_ns"] // 1000 * 1000,
        "readings": 200 - since["id"] + 1, "reason": "store restored empty",
    }  # fmt: skip
    assert verify_journal(data_dir).ok  # the audit entry chains on

    await drain(data_dir, vm.url)
    await wait_server_matches(vm, data_dir, exclude_ids=set(range(1, since["id"])))


async def test_forget_releases_a_removed_sinks_hold_on_retention(data_dir: Path, vm: Victoria) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    await journal.set_cursor("old-store", 0)  # a sink that was removed before it sent anything
    await fill(journal, 50, channels=("activity",))
    await journal.close()
    await drain(data_dir, vm.url)
    with connect(data_dir / "journal.sqlite3", read_only=True) as conn:
        held = plan(conn, cutoff_ns=2**62, verified=set()).held_by_sinks
    assert held == ["old-store"]

    config = data_dir.parent / "cell.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{data_dir}"\nsite = "s"\ncell = "c"\n\n'
        + sink_toml(vm.url).replace('"central"', '"old-store"'),
        encoding="utf-8",
    )
    still = daq("sinks", "forget", "old-store", "--config", str(config), "--data-dir", str(data_dir))
    assert still.returncode == 1
    assert still.stderr.count("\n") == 1
    assert "still in the configuration" in still.stderr
    unknown = daq("sinks", "forget", "nope", "--data-dir", str(data_dir))
    assert unknown.returncode == 1
    assert "no sink 'nope'" in unknown.stderr
    assert "central" in unknown.stderr
    assert "old-store" in unknown.stderr

    done = daq("sinks", "forget", "old-store", "--data-dir", str(data_dir), "--reason", "store retired")
    assert done.returncode == 0, done.stderr
    assert "forgotten (50 readings" in done.stdout
    with JournalReader(data_dir) as r:
        assert set(r.sink_cursors()) == {"central"}
    (entry,) = audit_of(data_dir, "sink_forget")
    assert entry["subject"] == "old-store"
    assert entry["detail"] == {"last_id": 0, "unsent": 50, "reason": "store retired"}
    with connect(data_dir / "journal.sqlite3", read_only=True) as conn:
        assert plan(conn, cutoff_ns=2**62, verified=set()).held_by_sinks == []
    assert verify_journal(data_dir).ok
    listed = daq("sinks", "list", "--data-dir", str(data_dir))
    assert listed.stdout.strip() == "central: forwarded through id 50, pending 0"
