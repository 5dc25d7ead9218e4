"""``daq validate``: the requirements trace, a fast OQ subset through the real daemon and
simulators, a behaviour broken on purpose showing as a deviation, the PDF looked at, and the
manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from daq.cli import main
from daq.cli.validation import iq, oq, requirements

FAST = [
    "OQ-GAP-DISCONNECT",
    "OQ-BAD-FRAME",
    "OQ-KILL-RESTART",
    "OQ-DISK-FULL",  # the suite runs as root (as CI does): a small tmpfs is mounted and filled
    "OQ-VERIFY",
    "OQ-TAMPER",
    "OQ-ALARMS",
    "IQ-VERSIONS",
]


def _args(out: Path, *ids: str) -> list[str]:
    argv = ["validate", "--iq", "--oq", "--out", str(out)]
    for i in ids:
        argv += ["--scenario", i]
    return argv


def test_every_requirement_traces_to_existing_scenarios() -> None:
    reqs = requirements.load()
    known = set(iq.IQ_IDS) | set(oq.SCENARIOS)
    assert len(reqs) >= 20
    assert requirements.trace_problems(reqs, known) == []
    areas = {r.area for r in reqs}
    for area in ("acquisition", "gaps and quality", "journal integrity", "time integrity", "runs and seals",
                 "exports", "alarms", "users and signatures", "forwarding", "hardening and restart"):  # fmt: skip
        assert area in areas


def test_trace_problems_names_untraced_and_unknown() -> None:
    reqs = [
        requirements.Requirement("URS-1", "a", "t", "high", ()),
        requirements.Requirement("URS-2", "a", "t", "high", ("OQ-NOPE",)),
    ]
    assert requirements.trace_problems(reqs, {"OQ-VERIFY"}) == [
        "URS-1: traced to no scenario",
        "URS-2: unknown scenario OQ-NOPE",
    ]


def _pdf_text(pdf: Path, tmp: Path) -> str:
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp / "page")], check=True)
    pages = sorted(tmp.glob("page-*.png"))
    assert pages
    assert all(p.stat().st_size > 1000 for p in pages)
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.slow
def test_fast_subset_passes_and_pack_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pack"
    code = main(_args(out, *FAST))
    doc = json.loads((out / "validation.json").read_text())
    statuses = {s["id"]: s["status"] for s in doc["scenarios"]}
    assert statuses == dict.fromkeys(FAST, "pass"), doc["deviations"]
    assert code == 0
    assert doc["deviations"] == []
    for s in doc["scenarios"]:
        assert s["steps"]
        assert s["started"]
        assert s["finished"]
        for e in s["evidence"]:
            assert (out / e["file"]).is_file()
    text = _pdf_text(out / "validation.pdf", tmp_path)
    assert "Trace matrix" in text
    assert "URS-011" in text
    assert "OQ-GAP-DISCONNECT pass" in text
    assert "Summary" in text
    assert "Verdict: PASSED" in text
    capsys.readouterr()
    assert main(["validate", "--verify", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("files match the manifest")
    # One flipped byte in one evidence file: the check fails naming it.
    victim = out / doc["scenarios"][1]["evidence"][0]["file"]
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))
    assert main(["validate", "--verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err
    assert victim.name in err


@pytest.mark.slow
def test_disabled_gap_records_fail_the_gap_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam: a supervisor that writes no gap record. The gap scenario must catch it."""
    from daq.supervisor import Supervisor

    monkeypatch.setattr(Supervisor, "_gap", lambda self, *a, **k: None)
    out = tmp_path / "pack"
    assert main(_args(out, "OQ-GAP-DISCONNECT")) == 1
    doc = json.loads((out / "validation.json").read_text())
    assert [d["scenario"] for d in doc["deviations"]] == ["OQ-GAP-DISCONNECT"]
    assert doc["summary"]["verdict"] == "DEVIATIONS"
    trace = {t["requirement"]: t["result"] for t in doc["trace"]}
    assert trace["URS-011"] == "fail"
    text = _pdf_text(out / "validation.pdf", tmp_path)
    assert "Deviations" in text
    assert "OQ-GAP-DISCONNECT (fail)" in text
    assert "Verdict: DEVIATIONS" in text


def test_verify_refuses_a_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--verify", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_pq_reads_the_site_config_and_reports_per_instrument(tmp_path: Path) -> None:
    import socket
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = subprocess.Popen(
        [sys.executable, "-m", "daq", "simulate", "veenstra-vdc404", "--listen", f"tcp://127.0.0.1:{port}",
         "--set", "interval_s=0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        site = tmp_path / "site.toml"
        site.write_text(
            f'[daemon]\ndata_dir = "{tmp_path / "site-data"}"\n[api]\nenabled = false\n'
            f'[[instruments]]\nname = "dc-1"\nkind = "veenstra-vdc404"\nport = "socket://127.0.0.1:{port}"\n'
        )
        out = tmp_path / "pack"
        assert main(["validate", "--pq", "--config", str(site), "--duration", "2", "--out", str(out)]) == 0
        doc = json.loads((out / "validation.json").read_text())
        pq = next(s for s in doc["scenarios"] if s["id"] == "PQ-SITE")
        assert pq["status"] == "pass"
        assert any(st["action"] == "dc-1: read" and st["passed"] for st in pq["steps"])
    finally:
        sim.terminate()
        sim.wait(timeout=10)
