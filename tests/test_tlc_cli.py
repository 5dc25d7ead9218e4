"""``daq tlc list/show`` and ``daq simulate rtlc-scanner`` as a person uses them."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from matplotlib.image import imread

from daq.cli import main
from tests.helpers import free_port
from tests.proc import start_simulator, stop
from tests.tlc_helpers import record_scans


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tlccli") / "data"
    asyncio.run(
        record_scans(
            d,
            {"sim": {"rcp": "97"}, "scan": {"batch": "LU-0421", "operator": "jd"}},
            {"sim": {"rcp": "88"}, "seed": 4, "scan": {"batch": "LU-0422"}},
            {"sim": {"rcp": "99"}, "faults": {"abort": 1.0}, "seed": 2, "scan": {"batch": "LU-0423"}},
        )
    )
    return d


def test_list_shows_every_trace_with_rcp_and_verdict(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tlc", "list", "--data-dir", str(recorded)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "verdict" in out[0]
    assert len(out) == 4
    for line, words in zip(out[1:], (["LU-0421", "PASS", "lu-psma-itlc v2"], ["LU-0422", "FAIL"],
                                     ["LU-0423", " NO ", "no verdict"]), strict=True):  # fmt: skip
        for word in words:
            assert word in line
    assert main(["tlc", "list", "--data-dir", str(recorded), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["passed"] for r in rows] == [True, False, None]
    assert [r["complete"] for r in rows] == [True, True, False]
    assert rows[0]["rcp_percent"] == pytest.approx(97.0, abs=1.0)
    assert rows[1]["rcp_percent"] == pytest.approx(88.0, abs=1.0)


def test_show_prints_the_rcp_table_per_roi_and_writes_a_png(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["tlc", "list", "--data-dir", str(recorded), "--json"])
    trace_id = json.loads(capsys.readouterr().out)[1]["trace_id"]
    png = tmp_path / "chromatogram.png"
    assert main(["tlc", "show", trace_id, "--data-dir", str(recorded), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"trace {trace_id} on tlc1" in out
    assert "batch LU-0422" in out
    assert "200 of 200 positions" in out
    for column in ("ROI", "kind", "gross", "background", "net"):
        assert column in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in
            ("free", "colloid", "product")}  # fmt: skip
    assert set(rows) == {"free", "colloid", "product"}
    assert "(limit >= 95 %): FAIL" in out
    assert "proposed ROIs (advisory" in out
    image = imread(str(png))
    assert image.shape[0] > 300
    assert image.shape[1] > 600
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_of_an_aborted_scan_says_incomplete_and_gives_no_verdict(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tlc", "show", "last", "--data-dir", str(recorded)]) == 0
    out = capsys.readouterr().out
    assert "INCOMPLETE: scanner error: motor stalled" in out
    assert "no verdict" in out
    assert "PASS" not in out
    assert main(["tlc", "show", "last", "--data-dir", str(recorded), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["trace"]["complete"] is False
    assert data["analyses"][0]["results"]["passed"] is None
    assert data["trace"]["raw"].endswith("Error: motor stalled\r\n")


def test_show_names_an_unknown_or_ambiguous_scan(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tlc", "show", "nope", "--data-dir", str(recorded)]) == 1
    assert "no TLC trace 'nope'" in capsys.readouterr().err
    assert main(["tlc", "show", "tlc1-", "--data-dir", str(recorded)]) == 1
    assert "matches 3 traces" in capsys.readouterr().err


def test_list_of_a_journal_without_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_empty_journal(tmp_path))
    assert main(["tlc", "list", "--data-dir", str(tmp_path)]) == 0
    assert "no TLC traces" in capsys.readouterr().out


async def _empty_journal(d: Path) -> None:
    from daq.clock import SystemClock
    from daq.journal import Journal

    journal = await Journal.open(d, clock=SystemClock())
    await journal.close()


def test_simulate_rtlc_scanner_speaks_the_protocol() -> None:
    port = free_port()
    proc = start_simulator("rtlc-scanner", port, "--set", "time_scale=0", "--set", "home_s=0",
                           "--set", "product=ac225-psma", "--set", "rcp=90")  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"AC-0001,jd,20,1\n")
            data = b""
            while not data.endswith(b"end\r\n"):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
    finally:
        stop(proc)
    lines = data.decode().splitlines()
    assert lines[-1] == "end"
    assert len(lines) == 41  # 20 mm in 0.5 mm steps, then 'end'
    assert lines[0].startswith("5; ")
    assert lines[-2].startswith("200; ")
