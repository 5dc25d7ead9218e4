"""The short version of ``bench/crash.py``: three SIGKILLs of ``daq run`` on the demo cell, each
0.2 to 1 s after the restarted daemon committed its first new reading (the benchmark's own run
does twenty)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_kills_lose_and_duplicate_nothing() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "crash.py"),
            "--kills",
            "3",
            "--min-s",
            "0.2",
            "--max-s",
            "1.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["kills"] == 3
    assert summary["readings_committed"] > 100
    assert summary["lost"] == 0
    assert summary["changed"] == 0
    assert summary["duplicated"] == 0
    assert summary["sequence_gaps_or_reorders"] == 0
    assert summary["hash_chains_verify"] is True
    assert summary["final_sigterm_exit_0"] is True
