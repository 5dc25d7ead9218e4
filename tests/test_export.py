"""Run exports: CSV and JSON, the manifest and the seal, and verifying copies of them."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from daq.cli import main as cli
from daq.journal import chain, codec
from daq.journal.journal import JOURNAL_FILE
from daq.journal.verify import verify_journal
from daq.runs.export import MANIFEST, ExportError, _json_text, verify_export, write_export
from tests.runs_helpers import TLC, record_run


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] = ord("5") if data[i] != ord("5") else ord("6")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_export_verifies_and_any_changed_byte_names_the_file(
    data_dir: Path, tmp_path: Path, fmt: str
) -> None:
    rec = await record_run(data_dir, readings=10)
    out = tmp_path / "export"
    manifest = write_export(data_dir, rec.run_id, out, fmt)  # type: ignore[arg-type]
    assert manifest["seal"] == rec.run["seal"]
    assert manifest["sealed"] is True
    names = {p.name for p in out.iterdir()}
    expected = {f"{t}.{fmt}" for t in ("readings", "events", "audit", "run_events", "configs")}
    assert expected | {"run.json", "summary.json", MANIFEST} <= names
    if TLC:
        assert {f"traces.{fmt}", f"analyses.{fmt}"} <= names
        assert manifest["tables"]["analyses"]["rows"] == 2  # the re-integration is exported too
    report = verify_export(_copy(out, tmp_path / "copy"), data_dir=data_dir)
    assert report.ok, report
    assert report.seal == rec.run["seal"]
    assert report.warnings == []
    for name in sorted(names):
        for at in (0.1, 0.5, 0.9):
            copy = _copy(out, tmp_path / f"t-{name}-{at}")
            _flip(copy / name, at)
            result = verify_export(copy)
            assert result.ok is False
            assert result.file == name, (name, at, result.problem)


async def test_forged_records_with_fresh_hashes_do_not_reproduce_the_seal(
    data_dir: Path, tmp_path: Path
) -> None:
    rec = await record_run(data_dir, readings=10)
    out = tmp_path / "e"
    write_export(data_dir, rec.run_id, out, "csv")
    # A forger changes a value, re-hashes that record, fixes the file hashes and the manifest:
    # every per-file check passes, but the seal no longer follows from the records.
    path = out / "readings.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols = header[: header.index("run_id") + 1]
    exported = json.loads((out / MANIFEST).read_text())
    types = exported["tables"]["readings"]["types"]
    assert exported["chain_payload"] == chain.PAYLOAD_VERSION  # a new journal hashes with the newest
    victim = next(r for r in body if r[header.index("value")] != "\\N")
    victim[header.index("value")] = repr(float(victim[header.index("value")]) * 2)
    values = []
    for c, t in zip(cols, types, strict=True):
        v = victim[header.index(c)]
        values.append(None if v == "\\N" else int(v) if t == "INTEGER" else float(v) if t == "REAL" else
                      bytes.fromhex(v) if t == "BLOB" else v)  # fmt: skip
    victim[header.index("hash")] = chain.link(
        bytes.fromhex(victim[header.index("prev_hash")]),
        chain.payload_for("readings", exported["chain_payload"])(tuple(values)),
    ).hex()
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *body])
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.pop("manifest_sha256")
    manifest["files"]["readings.csv"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["manifest_sha256"] = hashlib.sha256(_json_text(manifest).encode()).hexdigest()
    (out / MANIFEST).write_text(_json_text(manifest))
    result = verify_export(out)
    assert result.ok is False
    # Either the next record no longer chains to the forged one, or the seal breaks.
    assert result.file in {"readings.csv", MANIFEST}
    assert "chain" in result.problem or "seal" in result.problem  # type: ignore[operator]


async def test_tampered_journal_refuses_export_and_fails_the_cross_check(
    data_dir: Path, tmp_path: Path
) -> None:
    rec = await record_run(data_dir, readings=10)
    out = tmp_path / "before"
    write_export(data_dir, rec.run_id, out, "json")
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    conn.execute("DROP TRIGGER readings_no_update")
    conn.execute(
        "UPDATE readings SET value = value * 2 WHERE run_id = ? AND value IS NOT NULL", (rec.run_id,)
    )
    conn.commit()
    conn.close()
    assert not verify_journal(data_dir).ok
    with pytest.raises(ExportError, match="does not match its chain hash"):
        write_export(data_dir, rec.run_id, tmp_path / "after", "json")
    assert verify_export(out).ok  # the export itself is intact ...
    crossed = verify_export(out, data_dir=data_dir)  # ... but the journal no longer matches it
    assert crossed.ok is False
    assert crossed.file == JOURNAL_FILE


async def test_export_and_verify_cli(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = await record_run(data_dir, readings=5)
    out = tmp_path / "cli-export"
    assert cli(["export", rec.run_id, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert rec.run["seal"] in text
    assert cli(["export", rec.run_id, "--data-dir", str(data_dir), "--out", str(out)]) == 1
    assert "not empty; exports never overwrite" in capsys.readouterr().err
    assert cli(["export", "no-such-run", "--data-dir", str(data_dir), "--out", str(tmp_path / "x")]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert cli(["verify", "--export", str(out), "--data-dir", str(data_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    (out / "notes.txt").write_text("reviewed by QA\n")
    assert cli(["verify", "--export", str(out)]) == 0
    assert "notes.txt is not part of the export" in capsys.readouterr().out
    _flip(out / "events.csv")
    assert cli(["verify", "--export", str(out)]) == 1
    assert "events.csv" in capsys.readouterr().err
    (out / "run.json").unlink()
    assert cli(["verify", "--json", "--export", str(out)]) == 1
    assert json.loads(capsys.readouterr().out)["file"] in {"events.csv", "run.json"}
    # The journal form still works, and needs one of the two.
    assert cli(["verify", "--data-dir", str(data_dir)]) == 0
    assert cli(["verify"]) == 2


@pytest.mark.slow
async def test_arbitrary_file_contents_give_a_report_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    """Even with the manifest re-made to match (so the content is parsed), any bytes in any file
    yield a failed report naming that file, never an exception."""
    from hypothesis import given
    from hypothesis import strategies as st

    rec = await record_run(data_dir, readings=3)
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    names = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    counter = iter(range(10**9))

    @given(name=st.sampled_from(names), blob=st.binary(max_size=300), keep=st.integers(0, 4000))
    def check(name: str, blob: bytes, keep: int) -> None:
        copy = _copy(out, tmp_path / f"h{next(counter)}")
        original = (copy / name).read_bytes()
        changed = original[:keep] + blob + original[keep + len(blob) :]
        if changed == original:
            return
        (copy / name).write_bytes(changed)
        manifest = json.loads((copy / MANIFEST).read_text())
        manifest.pop("manifest_sha256")
        manifest["files"][name] = hashlib.sha256(changed).hexdigest()
        manifest["manifest_sha256"] = hashlib.sha256(_json_text(manifest).encode()).hexdigest()
        (copy / MANIFEST).write_text(_json_text(manifest))
        result = verify_export(copy)
        assert result.ok is False
        assert result.file in {name, MANIFEST}
        shutil.rmtree(copy)

    check()


#: Exports of one run written by an earlier version (format 1, chain payload 2), kept as written.
EARLIER = Path(__file__).parent / "data" / "export-format-1"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_export_written_by_an_earlier_version_still_verifies(tmp_path: Path, fmt: str) -> None:
    out = _copy(EARLIER / fmt, tmp_path / "export")
    report = verify_export(out)
    # Verification writes every table back through today's code (readings through the codec)
    # and compares bytes: the format has not changed.
    assert report.ok, report
    assert report.records > 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert tuple(manifest["tables"]["readings"]["columns"]) == codec.READING_COLUMNS
    if fmt == "csv":
        header = (out / "readings.csv").read_text().splitlines()[0].split(",")
        assert header == [*codec.READING_COLUMNS, *codec.READABLE_COLUMNS, "prev_hash", "hash"]
    _flip(out / f"readings.{fmt}", 0.5)
    assert verify_export(out).file == f"readings.{fmt}"
