"""Retention: prune only expired, exported and verified data; audited; the journal stays verifiable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daq.cli import main as cli
from daq.daemon import Daemon
from daq.errors import DaqError
from daq.journal import JournalReader, verify_journal
from daq.journal.journal import JOURNAL_FILE
from daq.runs import store
from daq.runs.export import write_export
from daq.runs.retention import DAY_NS, PruneRefused, prune
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.runs_helpers import record_run, vdc_config


def _counts(data_dir: Path) -> dict[str, int]:
    with JournalReader(data_dir) as r:
        return {
            t: r.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("readings", "events", "audit")
        }


async def test_prune_needs_expiry_and_a_verified_export_and_keeps_the_journal_verifiable(
    data_dir: Path, tmp_path: Path
) -> None:
    rec = await record_run(data_dir, readings=10)
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, rec.run_id)
        in_run = r.conn.execute("SELECT COUNT(*) FROM readings WHERE run_id = ?", (rec.run_id,)).fetchone()[0]
        first_run_id = r.conn.execute(
            "SELECT MIN(id) FROM readings WHERE run_id = ?", (rec.run_id,)
        ).fetchone()[0]
    later = run["ended_ns"] + 400 * DAY_NS  # the run is past a 365-day retention then
    # Not expired yet: nothing goes.
    now_plan = prune(data_dir, exports=[], retention_days=365, actor="qa", now_ns=run["ended_ns"] + DAY_NS)
    assert now_plan.rows == {"readings": 0, "events": 0}
    # Expired but not exported: only the readings before the run may go; the run stays whole.
    plan = prune(data_dir, exports=[], retention_days=365, actor="qa", now_ns=later)
    assert plan.blocked_by == [rec.run_id]
    assert plan.through["readings"] == first_run_id - 1
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        assert (
            r.conn.execute("SELECT COUNT(*) FROM readings WHERE run_id=?", (rec.run_id,)).fetchone()[0]
            == in_run
        )
    # An export that does not verify is refused.
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "readings.csv").write_bytes(
        (bad / "readings.csv").read_bytes().replace(b"activity", b"activitx", 1)
    )
    with pytest.raises(PruneRefused, match=r"does not verify: readings.csv"):
        prune(data_dir, exports=[bad], retention_days=365, actor="qa", now_ns=later)
    # Exported and verified: the run's readings go too (all but each instrument's last reading).
    before = _counts(data_dir)
    done = prune(data_dir, exports=[out], retention_days=365, actor="qa", now_ns=later)
    assert done.runs == [rec.run_id]
    after = _counts(data_dir)
    assert after["readings"] == 1  # the last reading of dc1 keeps its sequence going
    assert before["readings"] - after["readings"] == done.rows["readings"]
    report = verify_journal(data_dir)
    assert report.ok, report.problem
    with JournalReader(data_dir) as r:
        prunes = [a for a in r.audit() if a["action"] == "prune"]
        checkpoints = r.table("prunes")
        triggers = {x[0] for x in r.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert len(prunes) == 2  # the run-less prefix, then the exported run
    assert prunes[-1]["actor"] == "qa"
    assert prunes[-1]["detail"]["runs"] == [rec.run_id]
    assert prunes[-1]["detail"]["exports"][rec.run_id]["seal"] == rec.run["seal"]
    assert [c["table_name"] for c in checkpoints][-1] in {"readings", "events"}
    assert {"readings_no_delete", "events_no_delete"} <= triggers  # the guards are back
    # The guards still hold outside a prune, and a deletion not covered by a checkpoint is caught.
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 1")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE id = 2")
    conn.commit()
    conn.close()
    broken = verify_journal(data_dir)
    assert broken.ok is False
    assert broken.table == "audit"


async def test_daemon_continues_after_a_prune_and_prune_refuses_while_it_runs(
    data_dir: Path, tmp_path: Path
) -> None:
    rec = await record_run(data_dir, readings=5)
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "json")
    with JournalReader(data_dir) as r:
        ended = store.get_run(r.conn, rec.run_id)["ended_ns"]
    later = ended + 400 * DAY_NS
    prune(data_dir, exports=[out], retention_days=365, actor="qa", now_ns=later)
    sim = await Vdc404Simulator(options={"interval_s": "0.02"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services and daemon.supervisors[0].readings >= 5)
        with pytest.raises(DaqError, match="a daemon is running"):
            prune(data_dir, exports=[out], retention_days=365, actor="qa", now_ns=later)
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        seqs = [x["seq"] for x in r.readings(limit=100_000) if x["instrument"] == "dc1"]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_prune_cli(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    import types

    from daq.runs import retention

    rec = await record_run(data_dir, readings=5)
    # The command keeps at least a day: prune as if two days had passed since the run.
    later = types.SimpleNamespace(time_ns=lambda: time.time_ns() + 2 * DAY_NS, monotonic_ns=time.monotonic_ns)
    monkeypatch.setattr(retention, "time", later)
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    capsys.readouterr()
    args = [
        "prune",
        "--data-dir",
        str(data_dir),
        "--export",
        str(out),
        "--retention-days",
        "1",
        "--actor",
        "qa",
    ]
    before = _counts(data_dir)["readings"]
    assert cli([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "would prune" in text
    assert rec.run_id in text
    assert _counts(data_dir)["readings"] == before  # a dry run deletes nothing
    assert cli(args) == 0
    assert "pruned" in capsys.readouterr().out
    assert _counts(data_dir)["readings"] == 1
    assert cli(["verify", "--data-dir", str(data_dir)]) == 0
    assert cli(["audit", "--data-dir", str(data_dir)]) == 0
    assert " prune journal" in capsys.readouterr().out


async def test_an_instrument_whose_readings_all_went_continues_its_sequence(data_dir: Path) -> None:
    from daq.clock import SystemClock
    from daq.journal import Journal
    from daq.model import Quality, Reading

    clock = SystemClock()
    old = clock.time_ns() - 1000 * DAY_NS
    journal = await Journal.open(data_dir, clock=clock)
    for i in range(5):  # a calibrator since decommissioned, then one still in use
        journal.append(Reading("old-dc", "activity", 1.0, "Bq", Quality.GOOD, old + i, i))
    for i in range(5):
        journal.append(Reading("dc1", "activity", 2.0, "Bq", Quality.GOOD, old + 10 + i, 10 + i))
    await journal.close()
    done = prune(data_dir, exports=[], retention_days=30, actor="qa")
    assert done.rows["readings"] == 9  # everything but the chain's last row
    assert verify_journal(data_dir).ok
    journal = await Journal.open(data_dir, clock=clock)
    again = Reading("old-dc", "activity", 1.0, "Bq", Quality.GOOD, clock.time_ns(), clock.monotonic_ns())
    assert journal.append(again)
    await journal.close()
    with JournalReader(data_dir) as r:
        assert [x["seq"] for x in r.readings(limit=100) if x["instrument"] == "old-dc"][-1] == 6
    assert verify_journal(data_dir).ok


async def test_readings_a_sink_has_not_acknowledged_are_not_pruned(data_dir: Path, tmp_path: Path) -> None:
    rec = await record_run(data_dir, readings=10)
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, rec.run_id)
        first_run_id = r.conn.execute(
            "SELECT MIN(id) FROM readings WHERE run_id = ?", (rec.run_id,)
        ).fetchone()[0]
        in_run = r.conn.execute("SELECT COUNT(*) FROM readings WHERE run_id = ?", (rec.run_id,)).fetchone()[0]
    # A sink has acknowledged only up to the reading before the run (the forwarder registers
    # its cursor on start, at 0 before its first write).
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    conn.execute(
        "INSERT INTO sink_cursors (sink, last_id, updated_ns) VALUES ('central', ?, 0)", (first_run_id - 1,)
    )
    conn.commit()
    conn.close()
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    done = prune(
        data_dir, exports=[out], retention_days=365, actor="qa", now_ns=run["ended_ns"] + 400 * DAY_NS
    )
    assert done.held_by_sinks == ["central"]
    assert done.through["readings"] == first_run_id - 1
    with JournalReader(data_dir) as r:
        kept = r.conn.execute("SELECT COUNT(*) FROM readings WHERE run_id = ?", (rec.run_id,)).fetchone()[0]
    assert kept == in_run
    assert verify_journal(data_dir).ok
