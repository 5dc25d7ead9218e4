"""The journal: group commit, append-only guards, hash chain, sequence numbers, overflow."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from daq.cli import main
from daq.clock import ManualClock, SystemClock
from daq.configfile.load import JournalSection
from daq.journal import Journal, JournalReader, verify_journal
from daq.journal.feed import FeedBatch, Gap, read_range
from daq.model import Quality, Reading


def reading(i: int, instrument: str = "dc1", raw: bytes | None = None) -> Reading:
    return Reading(
        instrument=instrument,
        channel="activity",
        value=1000.0 + i,
        unit="Bq",
        quality=Quality.GOOD,
        acq_ns=1_700_000_000_000_000_000 + i,
        mono_ns=i,
        raw=raw,
        attrs={"nuclide": "F-18"},
    )


async def fill(data_dir: Path, n: int = 20, instrument: str = "dc1") -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    for i in range(n):
        journal.append(reading(i, instrument, raw=f"F-18: {i} MBq\r\n".encode()))
    journal.audit("test", detail={"n": n})
    await journal.flush()
    await journal.close()


async def test_flush_commits_and_reader_sees_rows(data_dir: Path) -> None:
    await fill(data_dir, 50)
    with JournalReader(data_dir) as r:
        rows = r.readings()
    assert [row["seq"] for row in rows] == list(range(1, 51))
    assert rows[3]["value"] == 1003.0
    assert rows[3]["raw"] == b"F-18: 3 MBq\r\n"
    assert rows[3]["attrs"] == {"nuclide": "F-18"}


async def test_sequence_numbers_continue_after_reopen(data_dir: Path) -> None:
    await fill(data_dir, 10)
    await fill(data_dir, 5)
    await fill(data_dir, 3, instrument="dc2")
    with JournalReader(data_dir) as r:
        rows = r.readings()
    assert [x["seq"] for x in rows if x["instrument"] == "dc1"] == list(range(1, 16))
    assert [x["seq"] for x in rows if x["instrument"] == "dc2"] == [1, 2, 3]
    assert verify_journal(data_dir).ok


async def test_update_and_delete_are_rejected(data_dir: Path) -> None:
    await fill(data_dir, 5)
    conn = sqlite3.connect(data_dir / "journal.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE readings SET value = 0 WHERE id = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM readings WHERE id = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'x'")
    conn.close()
    assert verify_journal(data_dir).ok


def sqlite3_cli() -> str:
    path = shutil.which("sqlite3")
    if path is None:
        pytest.fail("the sqlite3 command line is required (apt-get install sqlite3; .ci/run does)")
    return path


async def test_untouched_journal_verifies(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await fill(data_dir, 30)
    assert main(["verify", "--data-dir", str(data_dir)]) == 0
    assert "OK" in capsys.readouterr().out


async def test_row_changed_with_sqlite3_cli_fails_verify(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await fill(data_dir, 30)
    db = str(data_dir / "journal.sqlite3")
    # The guard stops a plain UPDATE, so a tamperer drops it first; verify must notice either way.
    blocked = subprocess.run(
        [sqlite3_cli(), db, "UPDATE readings SET value = 1 WHERE id = 7;"], capture_output=True, text=True
    )
    assert blocked.returncode != 0
    assert "append-only" in blocked.stderr
    subprocess.run(
        [sqlite3_cli(), db, "DROP TRIGGER readings_no_update; UPDATE readings SET value = 1 WHERE id = 7; "
         "CREATE TRIGGER readings_no_update BEFORE UPDATE ON readings BEGIN SELECT RAISE(ABORT, 'x'); END;"],
        check=True,
    )  # fmt: skip
    assert main(["verify", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "readings record 7" in err


async def test_deleted_row_fails_verify(data_dir: Path) -> None:
    await fill(data_dir, 10)
    db = str(data_dir / "journal.sqlite3")
    subprocess.run(
        [sqlite3_cli(), db, "DROP TRIGGER readings_no_delete; DELETE FROM readings WHERE id = 4;"], check=True
    )
    report = verify_journal(data_dir)
    assert not report.ok
    assert report.table == "readings"
    assert report.row_id == 4
    assert "guard" in (report.problem or "") or "missing" in (report.problem or "")


async def test_audit_row_changed_fails_verify(data_dir: Path) -> None:
    await fill(data_dir, 3)
    conn = sqlite3.connect(data_dir / "journal.sqlite3")
    conn.executescript(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE id = 1; "
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'x'); END;"
    )
    conn.close()
    report = verify_journal(data_dir)
    assert not report.ok
    assert (report.table, report.row_id) == ("audit", 1)


async def test_overflow_is_recorded_not_silent(data_dir: Path) -> None:
    journal = await Journal.open(
        data_dir, clock=ManualClock(), settings=JournalSection(max_pending=1000, commit_window_s=0.05)
    )
    for i in range(1500):  # no await: the writer cannot commit meanwhile
        journal.append(reading(i))
    assert journal.overflowed == 500
    await journal.flush()
    await journal.close()
    with JournalReader(data_dir) as r:
        assert len(r.readings()) == 1000
        overflow = [e for e in r.events() if e["kind"] == "overflow"]
    assert len(overflow) == 1
    assert overflow[0]["detail"]["dropped"] == 500
    assert overflow[0]["instrument"] == "dc1"


async def test_feed_subscribers_get_committed_batches_and_a_slow_one_a_gap_by_id(data_dir: Path) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    fast = journal.feed.subscribe(100, "fast")
    slow = journal.feed.subscribe(15, "slow")
    for batch in range(3):
        for i in range(10):
            journal.append(reading(batch * 10 + i))
        await journal.flush()
    got = [r for item in fast.take() if isinstance(item, FeedBatch) for r in item.records()]
    assert [rec.id for rec in got] == list(range(1, 31))
    assert [rec.seq for rec in got] == list(range(1, 31))
    # The slow one holds at most 15: the second batch would pass that, so it and the first
    # became a gap (the ids to read back from the journal); the third queued after the gap.
    gap, third = slow.take()
    assert isinstance(gap, Gap)
    assert isinstance(third, FeedBatch)
    assert (gap.after_id, gap.last_id, gap.missed) == (0, 20, 20)
    assert [rec.id for rec in third.records()] == list(range(21, 31))
    assert slow.gaps == 1
    assert journal.feed.overflows == 1
    with JournalReader(data_dir) as r:
        back = read_range(r.conn, gap.after_id, last_id=gap.last_id, limit=100)
    assert back + third.records() == got
    fast.close()
    slow.close()
    await journal.close()
    assert not journal.feed.subscriptions


async def test_status_json_counts(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    await fill(data_dir, 12)
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["instruments"]["dc1"]["rows"] == 12
    assert data["instruments"]["dc1"]["quality"]["GOOD"] == 12
    assert data["instruments"]["dc1"]["last_seq"] == 12


def test_none_and_bytes_are_bound_through_adapters_that_return_them_unchanged() -> None:
    """The journal registers sqlite3 adapters for None and bytes (a reading's NULL columns and
    its hash bind faster through them); each must hand SQLite the very value it was given."""
    import daq.journal.batch  # noqa: F401  (the registration is made on import)

    for value in (None, b"", b"\x00\xff raw frame"):
        adapter = sqlite3.adapters[(type(value), sqlite3.PrepareProtocol)]
        assert adapter(value) is value
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (a, b)")
        conn.execute("INSERT INTO t VALUES (?, ?)", (None, b"\x00\xff raw frame"))
        row = conn.execute("SELECT typeof(a), typeof(b), b FROM t").fetchone()
    finally:
        conn.close()
    assert row == ("null", "blob", b"\x00\xff raw frame")
