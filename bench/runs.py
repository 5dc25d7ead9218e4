"""Run export benchmark: seal, export (CSV, JSON), verify the export, render the report.

Prints JSON. Builds a journal holding one sealed run of ``--readings`` dose-calibrator
readings, then times each step. The ceiling, measured in the same run: a plain ``SELECT`` of
the run's readings written with ``csv.writer`` (no chain hashes, no checks).

    .venv/bin/python bench/runs.py [--readings 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from daq.clock import SystemClock
from daq.journal import Journal
from daq.journal.journal import dumps
from daq.model import Quality, Reading
from daq.runs.checked import journal_run, open_journal
from daq.runs.export import decoded, verify_export, write_export
from daq.runs.report import render
from daq.runs.seal import current_through, seal_from_journal
from daq.runs.store import get_run

RUN = "bench-run"


async def build(data_dir: Path, n: int) -> float:
    """A journal with one sealed run of ``n`` readings; returns the seconds the seal took."""
    clock = SystemClock()
    journal = await Journal.open(data_dir, clock=clock)
    start = clock.time_ns()
    meta = {"batch": "B-1", "product": "[18F]FDG", "nuclide": "F-18", "operator": "bench"}
    journal.record(
        "run_events",
        {"run_id": RUN, "kind": "start", "ts_ns": start, "mono_ns": 0, "actor": "bench", "reason": None,
         "instrument": None, "detail": dumps(meta)},
    )  # fmt: skip
    for i in range(n):
        journal.append(
            Reading(
                "dc1",
                "activity",
                7.4e9 * (1 - i / n / 20),
                "Bq",
                Quality.GOOD,
                start + i * 10**8,
                i * 10**8,
                raw=b"F18: 7.400 GBq\r\n",
                attrs={"nuclide": "F-18", "reported_value": 7.4, "reported_unit": "GBq"},
                run_id=RUN,
            )
        )
        if i % 5000 == 4999:
            await journal.flush()
    await journal.flush()
    end = start + n * 10**8
    conn = open_journal(data_dir)
    try:
        run = {**get_run(conn, RUN), "ended_ns": end}
        t = time.perf_counter()
        through = current_through(conn)
        seal = seal_from_journal(conn, run, through)
        seal_s = time.perf_counter() - t
    finally:
        conn.close()
    journal.record(
        "run_events",
        {"run_id": RUN, "kind": "stop", "ts_ns": end, "mono_ns": 0, "actor": "bench", "reason": None,
         "instrument": None, "detail": dumps({"seal": seal, "seal_through": through})},
    )  # fmt: skip
    await journal.flush()
    await journal.close()
    return seal_s


def ceiling(data_dir: Path, out: Path) -> float:
    conn = open_journal(data_dir)
    t = time.perf_counter()
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        for row in conn.execute("SELECT * FROM readings WHERE run_id = ? ORDER BY id", (RUN,)):
            w.writerow(row)
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--readings", type=int, default=100_000)
    args = p.parse_args()
    n = args.readings
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        seal_s = asyncio.run(build(data_dir, n))
        result: dict[str, object] = {
            "readings": n,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "seal_s": round(seal_s, 3),
            "ceiling_plain_csv_s": round(ceiling(data_dir, root / "plain.csv"), 3),
        }
        for fmt in ("csv", "json"):
            out = root / f"export-{fmt}"
            t = time.perf_counter()
            write_export(data_dir, RUN, out, fmt)
            result[f"export_{fmt}_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            ok = verify_export(out).ok
            result[f"verify_{fmt}_s"] = round(time.perf_counter() - t, 3)
            result[f"verify_{fmt}_ok"] = ok
            result[f"export_{fmt}_bytes"] = sum(f.stat().st_size for f in out.iterdir())
        conn = open_journal(data_dir)
        try:
            data, _, _ = journal_run(conn, RUN)
        finally:
            conn.close()
        t = time.perf_counter()
        render(decoded(data), root / "report.pdf")
        result["report_pdf_s"] = round(time.perf_counter() - t, 3)
        result["export_csv_readings_per_s"] = round(n / float(result["export_csv_s"]))  # type: ignore[arg-type]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
