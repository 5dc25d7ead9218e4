"""Journal ingest benchmark: readings/s through group commit with the hash chain on.

Prints JSON with three figures:

* burst: 300,000 readings appended as fast as one producer can, so the writer commits them in
  a few large transactions (the journal's maximum rate);
* ceiling: plain ``executemany`` of the same rows into a bare SQLite table (WAL,
  synchronous=FULL) in batches of 1000, measured in the same run;
* paced: producers at a steady rate (by default 20 instruments, 20,000 readings/s together,
  for 10 s) with the default settings, so each commit holds one commit window of readings,
  as in a running cell: commits, readings per commit, the CPU it costs, and the latency
  from append to commit.

    .venv/bin/python bench/journal.py [--readings 300000] [--paced-rate 20000] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

from daq.clock import SystemClock
from daq.configfile.load import JournalSection
from daq.journal import Journal, verify_journal
from daq.model import Quality, Reading


def make_readings(n: int) -> list[Reading]:
    base = time.time_ns()
    return [
        Reading(
            instrument=f"synth{i % 3}",
            channel=f"ch{i % 100:03d}",
            value=20.0 + (i % 1000) * 0.01,
            unit="degC",
            quality=Quality.GOOD,
            acq_ns=base + i * 1000,
            mono_ns=i * 1000,
        )
        for i in range(n)
    ]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def journal_rate(data_dir: Path, readings: list[Reading]) -> dict[str, float]:
    journal = await Journal.open(
        data_dir, clock=SystemClock(), settings=JournalSection(max_pending=10_000_000)
    )
    chunk = 1000
    t0, c0 = time.perf_counter(), cpu_s()
    for i in range(0, len(readings), chunk):
        for r in readings[i : i + chunk]:
            journal.append(r)
        # Yield like a real producer does, so the writer commits while readings arrive.
        await asyncio.sleep(0)
    await journal.flush()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    commits = journal.commits
    await journal.close()
    return {
        "readings_per_s": len(readings) / wall,
        "cpu_us_per_reading": cpu / len(readings) * 1e6,
        "commits": commits,
        "wall_s": wall,
    }


async def paced_stream(data_dir: Path, rate: float, seconds: float, producers: int) -> dict[str, float]:
    """``producers`` instruments appending ``rate`` readings/s together, in 10 ms ticks on
    the event loop's schedule (no drift), for ``seconds``; default journal settings."""
    journal = await Journal.open(data_dir, clock=SystemClock(), settings=JournalSection())
    latencies_ms: list[float] = []
    sizes: list[int] = []

    def committed(batch: list[Reading]) -> None:
        now = time.time_ns()
        sizes.append(len(batch))
        latencies_ms.extend((now - r.acq_ns) / 1e6 for r in batch)

    journal.on_commit(committed)
    loop = asyncio.get_running_loop()
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    appended = 0
    start = loop.time()
    t0, c0 = time.perf_counter(), cpu_s()
    n_ticks = round(seconds / tick)
    for k in range(n_ticks):
        owed += per_tick
        now = time.time_ns()
        mono = time.monotonic_ns()
        while owed >= 1.0:
            i = appended
            journal.append(
                Reading(
                    instrument=f"inst{i % producers:02d}", channel=f"ch{i % 50:02d}",
                    value=20.0 + (i % 1000) * 0.01, unit="degC", quality=Quality.GOOD,
                    acq_ns=now, mono_ns=mono,
                )
            )  # fmt: skip
            appended += 1
            owed -= 1.0
        await asyncio.sleep(max(0.0, start + (k + 1) * tick - loop.time()))
    await journal.flush()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    await journal.close()
    latencies_ms.sort()
    commits = len(sizes)
    return {
        "offered_readings_per_s": rate,
        "journaled_readings_per_s": round(sum(sizes) / wall),
        "seconds": seconds,
        "producers": producers,
        "readings_offered": appended,
        "readings_committed": sum(sizes),
        "commits": commits,
        "readings_per_commit_mean": round(sum(sizes) / max(1, commits), 1),
        "cpu_percent_of_one_core": round(cpu / wall * 100, 1),
        "cpu_us_per_reading": round(cpu / max(1, appended) * 1e6, 2),
        "append_to_commit_ms_p50": round(latencies_ms[len(latencies_ms) // 2], 1),
        "append_to_commit_ms_p99": round(latencies_ms[int(len(latencies_ms) * 0.99)], 1),
    }


def ceiling_rate(path: Path, readings: list[Reading]) -> float:
    """The same rows (every journal column, a 32-byte hash included) into a bare table."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE r (id INTEGER PRIMARY KEY, instrument TEXT, channel TEXT, seq INT, acq_ns INT, "
        "mono_ns INT, device_ns INT, value REAL, unit TEXT, quality INT, reason TEXT, raw BLOB, "
        "attrs TEXT, run_id TEXT, hash BLOB)"
    )
    digest = bytes(range(32))
    rows = [
        (i + 1, r.instrument, r.channel, i + 1, r.acq_ns, r.mono_ns, None, r.value, r.unit, 0, None, None,
         None, None, digest)
        for i, r in enumerate(readings)
    ]  # fmt: skip
    t0 = time.perf_counter()
    for i in range(0, len(rows), 1000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO r VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[i : i + 1000])
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    return len(rows) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readings", type=int, default=300_000, help="readings in the burst")
    ap.add_argument("--paced-rate", type=float, default=20_000.0, help="readings/s of the paced stream")
    ap.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced stream")
    ap.add_argument("--producers", type=int, default=20, help="instruments of the paced stream")
    args = ap.parse_args()
    readings = make_readings(args.readings)
    with tempfile.TemporaryDirectory() as tmp:
        ceiling = ceiling_rate(Path(tmp) / "bare.sqlite3", make_readings(args.readings))
        result = asyncio.run(journal_rate(Path(tmp) / "journal", readings))
        verified = verify_journal(Path(tmp) / "journal").ok
        paced = asyncio.run(
            paced_stream(Path(tmp) / "paced", args.paced_rate, args.paced_seconds, args.producers)
        )
        verified = verified and verify_journal(Path(tmp) / "paced").ok
    print(
        json.dumps(
            {
                "benchmark": "journal",
                "readings": args.readings,
                "journal_readings_per_s": round(result["readings_per_s"]),
                "journal_cpu_us_per_reading": round(result["cpu_us_per_reading"], 2),
                "group_commits": result["commits"],
                "ceiling_executemany_rows_per_s": round(ceiling),
                "fraction_of_ceiling": round(result["readings_per_s"] / ceiling, 3),
                "paced": paced,
                "synchronous": "FULL",
                "hash_chain": True,
                "verified": verified,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "system": platform.platform(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
