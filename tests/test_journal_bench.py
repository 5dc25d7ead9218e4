"""The short version of ``bench/journal.py``: the burst, the ceiling and the paced stream all
run, every paced reading is committed, and both journals verify (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_journal_benchmark_runs_and_its_journals_verify() -> None:
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "journal.py"), "--readings", "3000",
            "--paced-rate", "2000", "--paced-seconds", "0.5", "--producers", "4",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["verified"] is True
    assert out["readings"] == 3000
    paced = out["paced"]
    assert paced["commits"] >= 1
    # 2000/s for 0.5 s in 10 ms ticks: exactly 1000 readings offered, and all committed.
    assert paced["readings_offered"] == 1000
    assert paced["readings_committed"] == 1000
    assert paced["append_to_commit_ms_p50"] <= paced["append_to_commit_ms_p99"]
