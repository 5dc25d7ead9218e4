"""Crash consistency: SIGKILL ``daq run`` at random moments while the demo cell's readings flow.

After every kill the journal must hold every reading it had committed, exactly once; after the
final restart the hash chains verify and each instrument's sequence numbers run on without a
duplicate or a gap. Prints a JSON summary.

    .venv/bin/python bench/crash.py --kills 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from simcell import SimulatedCell

from daq.journal import verify_journal

Row = tuple[str, int, bytes]


def committed(db: Path) -> dict[int, Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, instrument, seq, hash FROM readings")
        }
    finally:
        conn.close()


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "daq", "run", "--config", str(config)], stdout=out, stderr=out
        )
    finally:
        out.close()


def wait_rows(db: Path, more_than: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                if len(committed(db)) > more_than:
                    return
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise SystemExit(f"no new readings within {timeout} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-s", type=float, default=0.3, help="shortest run before a kill")
    ap.add_argument("--max-s", type=float, default=2.0, help="longest run before a kill")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cell = SimulatedCell(seed=args.seed)
    cell.start()
    lost: list[int] = []
    changed: list[int] = []
    seen: dict[int, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        config = cell.write_config(Path(tmp) / "cell.toml", data_dir)
        db = data_dir / "journal.sqlite3"
        log = Path(tmp) / "daemon.log"
        started = time.monotonic()
        try:
            for _ in range(args.kills):
                proc = spawn(config, log)
                wait_rows(db, len(seen))
                time.sleep(rng.uniform(args.min_s, args.max_s))
                before = committed(db)  # all of it committed: readers see committed rows only
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                after = committed(db)
                for rid, row in {**seen, **before}.items():
                    if rid not in after:
                        lost.append(rid)
                    elif after[rid] != row:
                        changed.append(rid)
                seen = after
            proc = spawn(config, log)
            wait_rows(db, len(seen))
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            clean_exit = proc.wait(timeout=60) == 0
            final = committed(db)
            report = verify_journal(data_dir)
        finally:
            cell.stop()
        lost.extend(rid for rid in seen if rid not in final)
        changed.extend(rid for rid, row in seen.items() if rid in final and final[rid] != row)
        per_instrument: dict[str, list[int]] = {}
        for _, (instrument, seq, _) in sorted(final.items()):
            per_instrument.setdefault(instrument, []).append(seq)
        duplicated = sum(len(s) - len(set(s)) for s in per_instrument.values())
        gaps = sum(1 for s in per_instrument.values() for a, b in itertools.pairwise(s) if b != a + 1)
        summary = {
            "benchmark": "crash",
            "kills": args.kills,
            "readings_committed": len(final),
            "instruments": len(per_instrument),
            "lost": len(set(lost)),
            "changed": len(set(changed)),
            "duplicated": duplicated,
            "sequence_gaps_or_reorders": gaps,
            "hash_chains_verify": report.ok,
            "final_sigterm_exit_0": clean_exit,
            "elapsed_s": round(time.monotonic() - started, 1),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(summary, indent=2))
    ok = not lost and not changed and not duplicated and not gaps and report.ok and clean_exit
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
