"""``daq verify`` against a journal edited with the sqlite3 command line, as an attacker would:
text in a value column, guards replaced by do-nothing triggers of the same names, and the
newest rows deleted after an anchor (with the canonical guard put back)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daq.clock import SystemClock
from daq.journal import Journal, JournalReader, anchors, chain, verify_journal
from daq.journal.schema import CHAINED, guards
from daq.runs.export import write_export
from tests.runs_helpers import record_run
from tests.test_journal import reading, sqlite3_cli


def sql(data_dir: Path, script: str) -> None:
    subprocess.run([sqlite3_cli(), str(data_dir / "journal.sqlite3"), script], check=True)


def verify_cli(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq", "verify", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def journal_with(data_dir: Path, n: int, *, anchor_at: int | None = None) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    try:
        for i in range(n):
            journal.append(reading(i))
            if anchor_at is not None and i + 1 == anchor_at:
                await journal.flush()
                assert journal.anchors.anchor("periodic")
        await journal.flush()
    finally:
        await journal.close()


async def test_text_in_a_value_column_names_the_record(data_dir: Path) -> None:
    await journal_with(data_dir, 10)
    sql(
        data_dir,
        "DROP TRIGGER readings_no_update; UPDATE readings SET value = 'lots' WHERE id = 6; "
        + guards("readings")[0]
        + ";",
    )
    proc = verify_cli(data_dir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "readings record 6 holds a value of the wrong type (column value holds str 'lots'" in proc.stderr
    report = verify_journal(data_dir)
    assert (report.table, report.row_id) == ("readings", 6)


@pytest.mark.parametrize("op", ["no_update", "no_delete"])
async def test_guard_replaced_by_a_do_nothing_trigger_of_the_same_name(data_dir: Path, op: str) -> None:
    await journal_with(data_dir, 5)
    event = "UPDATE" if op == "no_update" else "DELETE"
    sql(
        data_dir,
        f"DROP TRIGGER readings_{op}; "
        f"CREATE TRIGGER readings_{op} BEFORE {event} ON readings BEGIN SELECT 1; END;",
    )
    proc = verify_cli(data_dir)
    assert proc.returncode == 1
    assert f"append-only guard trigger(s) replaced (not the canonical SQL): readings_{op}" in proc.stderr
    # The replacement lets rows change: the guard really was disarmed.
    if op == "no_delete":
        sql(data_dir, "DELETE FROM readings WHERE id = 5;")
        with JournalReader(data_dir) as r:
            assert r.max_reading_id() == 4


async def test_newest_rows_deleted_after_an_anchor_are_detected_and_named(data_dir: Path) -> None:
    await journal_with(data_dir, 30, anchor_at=20)
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        assert [a["cause"] for a in r.table("anchors")] == ["periodic", "close"]
    # Deleting the newest rows, then putting the canonical guard back, leaves an intact chain.
    sql(
        data_dir,
        "DROP TRIGGER readings_no_delete; DELETE FROM readings WHERE id > 15; " + guards("readings")[1] + ";",
    )
    proc = verify_cli(data_dir)
    assert proc.returncode == 1
    assert "readings: records after id 15 were deleted: anchor 2 (close, " in proc.stderr
    assert "saw the chain reach id 30" in proc.stderr
    report = verify_journal(data_dir)
    assert (report.table, report.row_id) == ("readings", 16)
    # Deleting the newest anchor as well still leaves the earlier one.
    sql(
        data_dir,
        "DROP TRIGGER anchors_no_delete; DELETE FROM anchors WHERE id = 2; " + guards("anchors")[1] + ";",
    )
    proc = verify_cli(data_dir)
    assert proc.returncode == 1
    assert "readings: records after id 15 were deleted: anchor 1 (periodic, " in proc.stderr
    assert "saw the chain reach id 20" in proc.stderr


async def test_a_rewritten_chain_differs_from_its_anchor(data_dir: Path) -> None:
    await journal_with(data_dir, 10, anchor_at=10)
    # Change a row and recompute every hash after it (the attacker knows the chain's rules):
    # the chain is intact again, but not the one the anchor saw.

    conn = sqlite3.connect(data_dir / "journal.sqlite3")
    conn.executescript("DROP TRIGGER readings_no_update; UPDATE readings SET value = 1.0 WHERE id = 3;")
    cols = ", ".join(CHAINED["readings"])
    previous = chain.GENESIS
    for row in conn.execute(f"SELECT {cols} FROM readings ORDER BY id").fetchall():
        previous = chain.link(previous, chain.payload_for("readings", chain.PAYLOAD_VERSION)(row))
        conn.execute("UPDATE readings SET hash = ? WHERE id = ?", (previous, row[0]))
    conn.executescript(guards("readings")[0] + ";")
    conn.commit()
    conn.close()
    report = verify_journal(data_dir)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith("readings record 10 differs from its hash anchored by anchor 1")


async def test_anchors_are_written_periodically_on_commit(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anchors, "ANCHOR_EVERY_S", 0.0)
    await journal_with(data_dir, 3)
    with JournalReader(data_dir) as r:
        rows = r.table("anchors")
    assert rows
    assert {a["cause"] for a in rows} == {"periodic"}
    assert verify_journal(data_dir).ok


async def test_a_seal_and_an_export_anchor_the_heads(data_dir: Path, tmp_path: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    write_export(data_dir, rec.run_id, tmp_path / "export")
    with JournalReader(data_dir) as r:
        causes = [a["cause"] for a in r.table("anchors")]
    assert f"seal:{rec.run_id}" in causes
    assert causes[-1] == f"export:{rec.run_id}"
    assert verify_journal(data_dir).ok
