"""The radio-TLC driver and the daemon's TLC service against an independent scanner emulator
(``tests/peers/tlc.py``, written from docs/instruments.md), over a real TCP socket and a PTY."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from daq.cli import main
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality
from daq.supervisor import State
from daq.tlc import store
from daq.tlc.service import TlcService
from tests.helpers import wait_until
from tests.peers import TlcScannerPeer
from tests.tlc_helpers import scanner_config


def strip_counts(x: float) -> int:
    """A [177Lu]Lu-PSMA strip on the method of tests/tlc_helpers: origin 15 mm, front 85 mm;
    free nuclide at the origin, the product at Rf 0.85 (74.5 mm); RCP about 97 %."""
    product = 2000 * math.exp(-0.5 * ((x - 74.5) / 2.0) ** 2)
    free = 60 * math.exp(-0.5 * ((x - 15.0) / 1.5) ** 2)
    return round(2 + product + free)


async def scan_with(peer: TlcScannerPeer, data_dir: Path, listen: str = "tcp") -> tuple[dict, dict, list]:  # type: ignore[type-arg]
    port = await peer.serve(listen)
    daemon = Daemon(scanner_config(data_dir, port))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "tlc" in daemon.services)
        await wait_until(lambda: daemon.supervisors[0].state is State.CONNECTED)
        tlc = daemon.services["tlc"]
        assert isinstance(tlc, TlcService)
        trace_id = await tlc.start_scan(
            "tlc1", batch="LU-1", operator="qc", range_mm=100, time_min=5, actor="qc"
        )
        outcome = await asyncio.wait_for(tlc.wait(trace_id), 20)
    finally:
        daemon.request_stop()
        await task
        await peer.close()
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, trace_id)
        [analysis] = store.analyses(r, trace_id)
        rows = [x for x in r.readings() if x["channel"] == "counts"]
    assert outcome["analysis_id"] == analysis["analysis_id"]
    return trace, analysis["results"], rows


@pytest.mark.parametrize("listen", ["tcp", "pty"])
async def test_a_full_scan_passes(listen: str, data_dir: Path) -> None:
    trace, results, _ = await scan_with(TlcScannerPeer(strip_counts), data_dir, listen)
    assert trace["complete"] is True
    assert len(trace["counts"]) == trace["params"]["expected_points"] == 200
    assert results["missing_positions"] == 0
    assert results["passed"] is True
    assert results["rcp_percent"] == pytest.approx(97, abs=1.5)


async def test_an_early_end_withholds_the_verdict_over_unmeasured_roi_positions(data_dir: Path) -> None:
    # 'end' after 80 mm: the product ROI (Rf 0.52 to 1.15, to 95.5 mm) was not measured to its end.
    trace, results, _ = await scan_with(TlcScannerPeer(strip_counts, end_after=160), data_dir)
    assert trace["complete"] is True  # the scanner said 'end'
    assert len(trace["counts"]) == 160
    assert results["missing_positions"] == 40
    assert results["missing_mm"][0] == 80.5
    assert results["passed"] is None
    assert any("inside ROIs" in w for w in results["warnings"])


async def test_an_early_end_outside_every_roi_keeps_the_verdict(data_dir: Path) -> None:
    # 'end' at 97.5 mm: the unmeasured 98..100 mm lie beyond every ROI.
    _, results, _ = await scan_with(TlcScannerPeer(strip_counts, end_after=195), data_dir)
    assert results["missing_positions"] == 5
    assert results["passed"] is True


async def test_positions_are_counted_once(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A scanner that also reports the origin: 201 lines for a scan of 200 positions.
    trace, results, rows = await scan_with(TlcScannerPeer(strip_counts, include_origin=True), data_dir)
    assert len(trace["counts"]) == trace["params"]["expected_points"] == 200
    assert trace["positions_mm"][0] == 0.5
    assert results["points"] == 200
    [origin] = [x for x in rows if x["quality"] == Quality.BAD]
    assert origin["raw"] == b"0; 2\n"
    assert "origin" in origin["attrs"]["error"]
    capsys.readouterr()
    assert main(["tlc", "show", "last", "--data-dir", str(data_dir)]) == 0
    assert "200 of 200 positions" in capsys.readouterr().out
