"""The run report: rendered to PNG pages and PDF; its sections and figures read back from the
pages and compared with the export made from the same journal."""

from __future__ import annotations

import asyncio
import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from daq.cli import main as cli
from daq.physics import nuclide
from daq.runs.checked import journal_run, open_journal
from daq.runs.export import decoded, verify_export, write_export
from daq.runs.report import SECTIONS, render
from tests.runs_helpers import TLC, record_run


def _pages(paths: list[Path]) -> list[dict[str, str]]:
    out = []
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG"
            assert im.size[0] > 500
            assert im.size[1] > 800
            # Not blank: the page has drawn pixels besides the white background.
            extrema = im.convert("L").getextrema()
            assert extrema[0] < 128  # type: ignore[operator]
            out.append(dict(im.text))  # type: ignore[attr-defined]
    return out


async def test_report_pages_have_every_section_and_the_export_figures(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = await record_run(data_dir, readings=20)
    export = tmp_path / "export"
    write_export(data_dir, rec.run_id, export, "csv")
    capsys.readouterr()
    out = tmp_path / "report" / "run.png"
    out.parent.mkdir()
    assert cli(["report", rec.run_id, "--data-dir", str(data_dir), "--out", str(out), "--png"]) == 0
    printed = capsys.readouterr().out
    files = sorted((tmp_path / "report").glob("run-p*.png"))
    assert len(files) >= len(SECTIONS)
    assert all(str(f) in printed for f in files)
    pages = _pages(files)
    assert list(dict.fromkeys(p["Sections"] for p in pages)) == list(SECTIONS)
    summary = json.loads((export / "summary.json").read_text())
    # The figures behind every page are the export's figures.
    for page in pages:
        assert json.loads(page["Figures"]) == summary
    # ... and those follow from the exported readings: first/last GOOD activity, decay to EOS, yield.
    with (export / "readings.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["channel"] == "activity" and r["quality_name"] == "GOOD"]
    dc = summary["dose_calibrators"]["dc1/activity"]
    first, last = rows[0], rows[-1]
    assert dc["first_bq"] == float(first["value"])
    assert dc["last_bq"] == float(last["value"])
    lam = nuclide("F-18").decay_constant
    eos = summary["eos_ns"]
    first_eos = float(first["value"]) * math.exp(-lam * (eos - int(first["acq_ns"])) / 1e9)
    last_eos = float(last["value"]) * math.exp(-lam * (eos - int(last["acq_ns"])) / 1e9)
    assert dc["first_eos_bq"] == pytest.approx(first_eos, rel=1e-12)
    assert dc["yield_percent"] == pytest.approx(last_eos / first_eos * 100, rel=1e-12)
    with (export / "readings.csv").open(newline="") as f:
        assert summary["readings"] == len(list(csv.DictReader(f)))
    # The text on the pages: header facts, the yield as printed, the annotation, the audit trail.
    header = pages[0]["Text"]
    assert "LOT 42/A" in header
    assert rec.run["seal"] in header
    assert "Veenstra VDC-404" in header
    # The activity table: the last GOOD reading, decay-corrected to EOS.
    qc = json.loads(pages[0]["QC"])
    row = next(a for a in qc["activity"] if a["channel"] == "dc1/activity")
    assert row["measured_bq"] == float(last["value"])
    assert row["corrected_bq"] == pytest.approx(last_eos, rel=1e-12)
    assert qc["yield"] == {"configured": False}
    assert rec.annotation in header
    assert "shield cracked" in header
    audit_text = "\n".join(p["Text"] for p in pages if p["Sections"] == "audit")
    for action in ("run_start", "annotation", "t0", "run_stop", "run_sealed"):
        assert action in audit_text
    if TLC:
        tlc = next(p["Text"] for p in pages if p["Sections"] == "tlc")
        assert "T-1" in tlc
        assert "A-2 | psma-tlc 2 | 96.25 % | PASS | current | carol" in tlc
        assert "A-1 | psma-tlc 1 | 91.50 % | FAIL | superseded | daemon" in tlc
        assert "tlc_reintegrate" in audit_text  # the re-integration, made after the run, is in its report
        assert "T-1: 96.25 % (limit 95.0 %) PASS, psma-tlc v2" in header


async def test_report_pdf(data_dir: Path, tmp_path: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    conn = open_journal(data_dir)
    try:
        data, _, _ = journal_run(conn, rec.run_id)
    finally:
        conn.close()
    result = render(decoded(data), tmp_path / "r.pdf")
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type /Page>") >= len(
        SECTIONS
    )
    assert list(dict.fromkeys(result["sections"])) == list(SECTIONS)
    assert result["figures"]["seal"] == rec.run["seal"]


async def test_reintegration_with_the_tlc_command_is_in_the_runs_audit_export_and_report(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = await record_run(data_dir, readings=3)
    demo = Path(__file__).resolve().parents[1] / "config" / "demo.toml"
    args = ["tlc", "reintegrate", "T-1", "--data-dir", str(data_dir), "--method", "lu-psma-itlc",
            "--config", str(demo), "--actor", "dave", "--reason", "second look at the ROIs"]  # fmt: skip
    assert await asyncio.to_thread(cli, args) == 0  # the command runs its own event loop
    assert cli(["audit", "--data-dir", str(data_dir), "--run", rec.run_id]) == 0
    audit_out = capsys.readouterr().out
    assert "dave" in audit_out
    assert "second look at the ROIs" in audit_out
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "json")
    assert verify_export(out, data_dir=data_dir).ok
    analyses = json.loads((out / "analyses.json").read_text())["rows"]
    assert [a["actor"] for a in analyses] == ["daemon", "carol", "dave"]
    assert (
        cli(["report", rec.run_id, "--data-dir", str(data_dir), "--out", str(tmp_path / "r.png"), "--png"])
        == 0
    )
    pages = _pages(sorted(tmp_path.glob("r-p*.png")))
    audit_text = "\n".join(p["Text"] for p in pages if p["Sections"] == "audit")
    assert "dave" in audit_text
    assert "tlc_reintegrate" in audit_text
    tlc = next(p["Text"] for p in pages if p["Sections"] == "tlc")
    assert "lu-psma-itlc 1" in tlc
    assert "| current | dave" in tlc
    assert "superseded | carol" in tlc
