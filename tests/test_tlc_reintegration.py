"""Re-integration appends: the raw trace and every earlier analysis stay as they were, the
new analysis names the one it supersedes, and the audit trail holds who, why and the run."""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import sqlite3
from pathlib import Path

import pytest

from daq.cli import main
from daq.journal import JournalReader, verify_journal
from daq.tlc import store
from tests.tlc_helpers import METHOD_TOML, NO_API, record_scans


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal with a complete 97 % scan and an aborted one (made once, copied per test)."""
    d = tmp_path_factory.mktemp("tlc") / "data"
    asyncio.run(
        record_scans(
            d,
            {"sim": {"rcp": "97"}, "scan": {"batch": "LU-0421", "operator": "jd", "run_id": "RUN-7"}},
            {"sim": {"rcp": "99"}, "faults": {"abort": 1.0}, "seed": 2},
        )
    )
    return d


@pytest.fixture
def journal_dir(recorded: Path, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(recorded, d)
    return d


def traces(d: Path) -> list[dict[str, object]]:
    with JournalReader(d) as r:
        return store.traces(r)


def test_reintegration_keeps_both_analyses_and_their_audit_entries(journal_dir: Path) -> None:
    first = traces(journal_dir)[0]
    trace_id = str(first["trace_id"])
    with JournalReader(journal_dir) as r:
        [original] = store.analyses(r, trace_id)
        raw_before = r.conn.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchall()
    assert first["run_id"] == "RUN-7"
    rc = main(["tlc", "reintegrate", trace_id, "--data-dir", str(journal_dir),
               "--roi", "free:free:-0.15:0.3", "--roi", "product:product:0.55:1.15",
               "--actor", "qa-anna", "--reason", "free ROI widened (deviation DEV-12)"])  # fmt: skip
    assert rc == 0
    rc = main(["tlc", "reintegrate", trace_id, "--data-dir", str(journal_dir),
               "--method", "lu-psma-itlc", "--actor", "qa-ben", "--reason", "back to the validated method"])  # fmt: skip
    assert rc == 0
    with JournalReader(journal_dir) as r:
        history = store.analyses(r, trace_id)
        audits = store.reintegrations(r, trace_id)
        raw_after = r.conn.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchall()
    assert raw_after == raw_before  # the raw trace is untouched
    assert [a["analysis_id"] for a in history] == [f"{trace_id}/a1", f"{trace_id}/a2", f"{trace_id}/a3"]
    assert history[0] == original  # the original is never overwritten
    assert [a["supersedes"] for a in history] == [None, f"{trace_id}/a1", f"{trace_id}/a2"]
    a2, a3 = history[1], history[2]
    assert a2["actor"] == "qa-anna"
    assert a2["reason"] == "free ROI widened (deviation DEV-12)"
    assert a2["method_version"] == "2+adhoc"
    assert [r["label"] for r in a2["results"]["rois"]] == ["free", "product"]
    assert a2["results"]["rois"][0]["rf_to"] == 0.3
    assert a2["run_id"] == "RUN-7"
    # --method without --config takes the method as stored (never an ad-hoc variant).
    assert a3["method_version"] == "2"
    assert a3["results"]["rois"] == original["results"]["rois"]
    assert a3["results"]["rcp_percent"] == original["results"]["rcp_percent"]
    assert [a["actor"] for a in audits] == ["qa-anna", "qa-ben"]
    assert all(a["run_id"] == "RUN-7" for a in audits)
    assert audits[0]["detail"]["reason"] == "free ROI widened (deviation DEV-12)"
    assert audits[0]["detail"]["analysis_id"] == f"{trace_id}/a2"
    assert audits[0]["detail"]["supersedes"] == f"{trace_id}/a1"
    assert audits[1]["detail"]["supersedes"] == f"{trace_id}/a2"
    assert verify_journal(journal_dir).ok


def test_reintegration_with_a_method_from_a_config_file(journal_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(METHOD_TOML.replace('version = "2"', 'version = "3"').replace("rf_to = 1.15", "rf_to = 1.1")
                   + NO_API)  # fmt: skip
    trace_id = str(traces(journal_dir)[0]["trace_id"])
    assert main(["tlc", "reintegrate", "last", "--data-dir", str(journal_dir), "--config", str(cfg),
                 "--method", "lu-psma-itlc", "--actor", "qa", "--reason", "method v3 released"]) == 0  # fmt: skip
    with JournalReader(journal_dir) as r:
        last_trace = store.find_trace(r, "last")
        history = store.analyses(r, str(last_trace["trace_id"]))
    assert last_trace["trace_id"] != trace_id  # 'last' is the aborted scan
    assert history[-1]["method_version"] == "3"
    # An incomplete trace stays without a verdict whatever the ROIs.
    assert history[-1]["results"]["complete"] is False
    assert history[-1]["results"]["passed"] is None


def test_reintegration_refuses_bad_input_and_writes_nothing(
    journal_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace_id = str(traces(journal_dir)[0]["trace_id"])
    base = ["tlc", "reintegrate", trace_id, "--data-dir", str(journal_dir), "--actor", "qa", "--reason", "x"]
    assert main([*base, "--roi", "free:free:0.3:0.1"]) == 2
    assert "must exceed rf_from" in capsys.readouterr().err
    assert main([*base, "--roi", "free:weird:0:0.1"]) == 2
    assert "kind must be one of" in capsys.readouterr().err
    assert main([*base, "--roi", "product:product:0.6:1.1", "--roi", "p2:product:0.0:0.2"]) == 2
    assert "exactly one ROI" in capsys.readouterr().err
    assert main([*base, "--method", "nope"]) == 2
    assert main(["tlc", "reintegrate", "nope", "--data-dir", str(journal_dir), "--actor", "qa", "--reason", "x",
                 "--method", "lu-psma-itlc"]) == 1  # fmt: skip
    assert "no TLC trace 'nope'" in capsys.readouterr().err
    assert main(["tlc", "reintegrate", trace_id, "--data-dir", str(journal_dir), "--actor", " ", "--reason", "x",
                 "--method", "lu-psma-itlc"]) == 1  # fmt: skip
    with JournalReader(journal_dir) as r:
        assert len(store.analyses(r, trace_id)) == 1
        assert store.reintegrations(r, trace_id) == []


def test_reintegration_refuses_while_a_daemon_holds_the_data_dir(journal_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    trace_id = str(traces(journal_dir)[0]["trace_id"])
    with (journal_dir / "daemon.lock").open("a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc = main(["tlc", "reintegrate", trace_id, "--data-dir", str(journal_dir), "--method", "lu-psma-itlc",
                   "--actor", "qa", "--reason", "x"])  # fmt: skip
    assert rc == 1
    assert "a daemon is running" in capsys.readouterr().err
    with JournalReader(journal_dir) as r:
        assert len(store.analyses(r, trace_id)) == 1


def test_analyses_and_traces_are_append_only(journal_dir: Path) -> None:
    conn = sqlite3.connect(journal_dir / "journal.sqlite3")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE analyses SET results = '{}'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM traces")
    finally:
        conn.close()
