"""The run report as a controlled document: pages read back with poppler (pdftotext, pdftoppm)
as QC would see them, and the activity and yield figures against hand-computed values."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from daq.journal import chain
from daq.model import Quality
from daq.physics import nuclide
from daq.runs import qc_figures
from daq.runs.qc_settings import ReportSection
from daq.runs.report import render
from daq.runs.store import RunData, TableRows
from tests.runs_helpers import record_run
from tests.test_signatures import APPR_PW, REV_PW, arun, cheap_hashes, make_users  # noqa: F401 (a fixture)

MIN = 60 * 10**9
T0 = 1_780_000_000 * 10**9  # 2026-05-28T20:26:40Z


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    assert path is not None, f"{tool} (poppler-utils) is needed to read the report back"
    return path


def page_texts(pdf: Path) -> list[str]:
    """The text of each page, as pdftotext extracts it."""
    text = subprocess.run(
        [_poppler("pdftotext"), "-layout", str(pdf), "-"], capture_output=True, check=True
    ).stdout
    pages = text.decode().split("\f")
    return pages[:-1] if pages and not pages[-1].strip() else pages


def rendered_pages(pdf: Path, tmp: Path) -> list[Path]:
    """Each page rendered to PNG by pdftoppm; each must show something besides white."""
    subprocess.run([_poppler("pdftoppm"), "-r", "40", "-png", str(pdf), str(tmp / "pg")], check=True)
    files = sorted(tmp.glob("pg-*.png"))
    for f in files:
        with Image.open(f) as im:
            assert im.convert("L").getextrema()[0] < 100  # type: ignore[operator]
    return files


def _reading(inst: str, ch: str, minute: float, value: float, unit: str, **attrs: Any) -> dict[str, Any]:
    return {"instrument": inst, "channel": ch, "acq_ns": T0 + int(minute * MIN), "value": value, "unit": unit,
            "quality": int(Quality.GOOD), "reason": None, "attrs": attrs, "run_id": "R-1", "seq": 0}  # fmt: skip


def hand_run() -> RunData:
    """An F-18 run: 10 GBq start at 0 min, 5 GBq product at 60 min, EOS at 90 min; a calibrator
    left on Lu-177; three process channels and a named step."""
    readings = [
        _reading("dc1", "activity", 0, 10e9, "Bq", nuclide="F-18"),
        _reading("dc1", "activity", 30, 7e9, "Bq", nuclide="F-18"),
        _reading("dc2", "activity", 60, 5e9, "Bq", nuclide="F-18"),
        _reading("dc3", "activity", 45, 1e9, "Bq", nuclide="Lu-177"),
        _reading("synth", "step_number", 10, 3.0, "", text="heat"),
        _reading("synth", "step_number", 40, 4.0, "", text="hold"),
    ]
    for m in range(0, 90, 5):
        readings += [_reading("synth", "reactor_temp", m, 20.0 + m, "degC"),
                     _reading("synth", "reactor_pressure", m, 100.0 + m, "kPa"),
                     _reading("synth", "flow", m, 1.0, "mL/min")]  # fmt: skip
    readings.sort(key=lambda r: r["acq_ns"])
    for i, r in enumerate(readings, 1):
        r["id"] = i
    run: dict[str, Any] = {"run_id": "R-1", "batch": "B-7", "product": "[18F]PSMA-1007", "nuclide": "F-18", "operator": "op",
           "method": None, "config_sha256": "c" * 64, "instruments": {}, "clock": {"synchronised": True,
           "source": "adjtimex"}, "started_ns": T0, "started_by": "op", "start_reason": None,
           "ended_ns": T0 + 90 * MIN, "ended_by": "op", "stop_reason": None, "seal": "5" * 64,
           "seal_through": {}, "t0": [], "annotations": []}  # fmt: skip
    tables = {"readings": TableRows("readings", (), [], readings)}
    return RunData(run, tables, chain.PAYLOAD_VERSION)


SETTINGS = ReportSection.model_validate(
    {"yield_start": "dc1/activity", "yield_product": "dc2/activity",
     "process": [{"title": "reactor", "channels": ["synth/reactor_temp", "synth/reactor_pressure"]}]}
)  # fmt: skip


@pytest.mark.slow
def test_yield_and_activity_at_eos_hand_computed(tmp_path: Path) -> None:
    data = hand_run()
    ref, _ = qc_figures.reference_ns(data, SETTINGS)
    assert ref == T0 + 90 * MIN
    assert nuclide("F-18").half_life_s == 109.77 * 60
    y = qc_figures.radiochemical_yield(data, SETTINGS, ref)
    # By hand: 5 / 10 = 50 %; corrected, both to EOS: 50 % x 2^(60 / 109.77) = 73.0318 %.
    assert y["uncorrected_percent"] == pytest.approx(50.0)
    assert y["corrected_percent"] == pytest.approx(73.0318, abs=1e-4)
    # 10 GBq at 0 min is 10 x 2^(-90/109.77) = 5.6648 GBq at EOS; 5 GBq at 60 min is 4.1371 GBq.
    assert y["start"]["corrected_bq"] == pytest.approx(5.6648e9, rel=1e-4)
    assert y["product"]["corrected_bq"] == pytest.approx(4.1371e9, rel=1e-4)
    table = {row["channel"]: row for row in qc_figures.activity_table(data, ref)}
    # dc1's last GOOD: 7 GBq at 30 min -> 7 x 2^(-60/109.77) = 4.7925 GBq at EOS.
    assert table["dc1/activity"]["measured_bq"] == 7e9
    assert table["dc1/activity"]["corrected_bq"] == pytest.approx(4.7925e9, rel=1e-4)
    assert table["dc1/activity"]["half_life_s"] == 109.77 * 60
    assert table["dc3/activity"]["mismatch"] is True  # left on Lu-177 in an F-18 run
    assert table["dc3/activity"]["corrected_bq"] == pytest.approx(
        1e9 * math.exp(-math.log(2) * 45 / (6.647 * 1440))
    )
    assert table["dc2/activity"]["mismatch"] is False
    # The same figures on the rendered page, in the site's time zone (Vienna: UTC+02:00 in May).
    pdf = tmp_path / "r.pdf"
    result = render(data, pdf, settings=SETTINGS, timezone="Europe/Vienna", by="qc-tester")
    assert result["status"] == "DRAFT"  # sealed but not approved
    texts = page_texts(pdf)
    activity = next(t for t in texts if "Activity and radiochemical yield" in t)
    assert "73.03 %" in activity
    assert "50.00 %" in activity
    assert "MISMATCH (run F-18)" in activity
    assert "2026-05-28 23:56:40+02:00" in activity  # EOS, 20:26:40Z + 90 min, in Vienna
    assert "1.8295 h" in activity
    assert "NNDC" in activity
    # Process: the configured group, the channel left out named, the steps by their enum names.
    png = render(data, tmp_path / "p.png", png=True, settings=SETTINGS, timezone="Europe/Vienna")
    meta = []
    for f in png["files"]:
        with Image.open(f) as im:
            meta.append(dict(im.text))  # type: ignore[attr-defined]
    process = "\n".join(m["Text"] for m in meta if m["Sections"] == "process")
    assert "2 of 3 recorded process channels shown" in process
    assert "not plotted (all are in the export): synth/flow" in process
    assert "heat" in process
    assert "hold" in process
    assert "step 3.0" not in process
    header = meta[0]["Text"]
    assert "73.03 % decay-corrected, 50.00 % not corrected" in header
    assert "synchronised at run start" in header
    # An open run: DRAFT on every page, and said so.
    open_run = RunData(
        {**data.run, "seal": None, "ended_ns": None, "ended_by": None}, data.tables, data.chain_version
    )
    result = render(open_run, tmp_path / "open.pdf", settings=SETTINGS)
    assert result["status"] == "DRAFT"
    texts = page_texts(tmp_path / "open.pdf")
    assert all("DRAFT" in t and "NOT SEALED" in t for t in texts)
    assert "the run is open (not sealed)" in texts[0]


@pytest.mark.usefixtures("cheap_hashes")
@pytest.mark.slow
async def test_pdf_pages_carry_header_footer_and_draft_until_approved(data_dir: Path, tmp_path: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    await asyncio.to_thread(make_users, data_dir)
    d = ["--data-dir", str(data_dir)]

    async def report(name: str) -> list[str]:
        pdf = tmp_path / f"{name}.pdf"
        rc, _, err = await arun(["report", rec.run_id, *d, "--out", str(pdf), "--by", "qa-lead"])
        assert rc == 0, err
        texts = page_texts(pdf)
        sub = tmp_path / name
        sub.mkdir()
        assert len(rendered_pages(pdf, sub)) == len(texts)
        n = len(texts)
        assert n >= 6
        for i, t in enumerate(texts, 1):
            assert f"page {i} of {n}" in t
            assert f"run {rec.run_id}" in t
            assert "batch LOT 42/A" in t
            assert "[18F]FDG" in t
            assert f"seal {rec.run['seal'][:16]}" in t
            assert "by qa-lead" in t
            assert "hotcell-daq 0.1.0" in t
            assert "generated 20" in t
        return texts

    unsigned = await report("unsigned")
    assert all("DRAFT" in t for t in unsigned)
    assert "REVIEWED by: ____" in unsigned[0]
    # The audit pages hold every entry in full: nothing cut with an ellipsis.
    audit = "\n".join(t for t in unsigned if "Audit trail of the run" in t)
    assert "entries, all shown" in audit
    assert "..." not in audit.replace(f"seal {rec.run['seal'][:16]}...", "")  # the page header's seal prefix
    assert (await arun(["runs", "sign", rec.run_id, *d, "--meaning", "reviewed"], f"rev\n{REV_PW}\n"))[0] == 0
    reviewed = await report("reviewed")
    assert all("DRAFT" in t for t in reviewed)
    assert "REVIEWED Rita Reviewer (rev)" in reviewed[0]
    rc, _, err = await arun(
        ["runs", "sign", rec.run_id, *d, "--meaning", "approved", "--comment", "released"],
        f"appr\n{APPR_PW}\n",
    )
    assert rc == 0, err
    approved = await report("approved")
    assert not any("DRAFT" in t for t in approved)
    assert "APPROVED: approved by Arno Approver" in approved[0]
    assert "APPROVED Arno Approver (appr)" in approved[0]
    assert "comment: released" in approved[0]
    # A re-integration after approval: a new analysis version; the report is a draft again and
    # says the signatures cover the earlier version.
    args = ["tlc", "reintegrate", "T-1", *d, "--roi", "p:product:0.1:0.35", "--roi", "f:impurity:0.7:0.9",
            "--origin-mm", "10", "--front-mm", "90", "--limit", "95", "--actor", "carol", "--reason", "wider ROI"]  # fmt: skip
    assert (await arun(args))[0] == 0
    again = await report("again")
    assert all("DRAFT" in t for t in again)
    assert "covers the earlier analysis version(s) A-2" in again[0]
    tlc = "\n".join(t for t in again if "Radio-TLC" in t)
    assert "superseded" in tlc
    assert json.dumps("wider ROI")[1:-1] in tlc


def test_report_settings_are_checked(tmp_path: Path) -> None:
    from daq.configfile.load import parse_config
    from daq.errors import ConfigError
    from tests.helpers import config_text

    inst = [{"name": "dc1", "kind": "veenstra-vdc404", "port": "socket://127.0.0.1:9"}]
    ok = parse_config(config_text(tmp_path, inst, '[report]\nyield_start = "dc1/activity"\n'))
    assert ok.model.report.yield_start == "dc1/activity"
    for extra, path, text in (
        (
            '[report]\nyield_product = "dc9/activity"\n',
            "report.yield_product",
            "names no configured instrument",
        ),
        ('[report]\nyield_start = "dc1"\n', "report.yield_start", "INSTRUMENT/CHANNEL"),
        ('[report]\nreference = "2026-05-28T20:00:00"\n', "report.reference", "needs an offset"),
        ('[[report.process]]\ntitle = "x"\nchannels = ["nope/t"]\n', "report.process[0].channels[0]", "nope"),
        ("[users]\nmin_password_length = 4\n", "users.min_password_length", "8"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(config_text(tmp_path, inst, extra))
        assert path in str(err.value)
        assert text in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(config_text(tmp_path, inst, daemon={"timezone": "Mars/Olympus"}))
    assert "daemon.timezone" in str(err.value)
    assert "unknown time zone" in str(err.value)
    assert parse_config(config_text(tmp_path, inst, daemon={"timezone": "Europe/Vienna"}))
