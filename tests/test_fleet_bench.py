"""The short version of ``bench/fleet.py``: two cells (``daq run`` each, with the demo cell's
simulators) into one VictoriaMetrics, with a store outage in the middle. Asserts exactness, not
speed: every reading of every cell is on the server exactly once. About 20 s: simulators, daemons
and the store start as processes, and the store stops and starts once. The phases are as short as
the proof allows (the steady window measures nothing here) and the sinks' backoff is capped at
half a second, so the catch-up starts soon after the store is back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_cells_through_a_store_outage_lose_and_duplicate_nothing() -> None:
    args = ["--cells", "2", "--warmup-s", "0", "--steady-s", "0.5", "--outage-s", "1", "--tail-s", "0.5",
            "--backoff-cap-s", "0.5"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["cells"] == 2
    assert run["outage"]["backlog_points"] > 0  # the outage left something to catch up
    assert run["stop"]["sigterm_exit_codes"] == [0]
    assert set(run["exactness"]) == {"site-0/cell-1", "site-0/cell-2"}
    for cell in run["exactness"].values():
        assert cell["readings_journaled"] > 100
        assert cell["points_on_server"] == cell["readings_journaled"]
        assert cell["samples_on_server"] == cell["samples_expected"]
        assert cell["lost"] == 0
        assert cell["duplicated"] == 0
        assert cell["differing"] == 0
        assert cell["quarantined"] == 0
