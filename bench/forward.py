"""Forwarding benchmark: backlog drain rate to a local VictoriaMetrics, and journal ingest while
draining. Prints JSON.

In one run, side by side (the machine is noisy):

* ``ceiling``: the client library alone: pre-formatted lines POSTed in batches of
  ``batch_size`` through influxdb-client's async write API with gzip (no journal, no formatting);
* ``drain``: a backlog of ``--backlog`` readings in the journal, forwarded by the
  forwarder (read from SQLite, format, gzip, POST, cursor) with nothing else running;
* ``drain_while_ingesting``: the same backlog size drained while a producer appends readings
  to the journal as fast as it can; reports both rates;
* ``demo``: the ingest rate of the demo hot cell (``daq demo`` for ``--demo-seconds``), and the
  drain rate as a multiple of it.

Every drained point is counted back from the server's export API.

    .venv/bin/python bench/forward.py [--backlog 300000] [--demo-seconds 20]

Needs ``victoria-metrics`` (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daq import logs
from daq.clock import SystemClock
from daq.configfile.load import JournalSection
from daq.forward.config import InfluxSink
from daq.forward.forwarder import InfluxForwarder
from daq.forward.lineprotocol import LineFormatter
from daq.journal import Journal, JournalReader, codec
from daq.model import Quality, Reading
from tests.victoria import Victoria

SERIES = 300  # 3 instruments x 100 channels


class Clock:
    """Timestamps for generated readings: series ``i % SERIES``, one millisecond apart per series
    (VictoriaMetrics keeps milliseconds), so every point is distinct on the server."""

    def __init__(self, start_ns: int):
        self.start_ns = start_ns
        self.i = 0

    def readings(self, n: int) -> list[Reading]:
        out = []
        for _ in range(n):
            i = self.i
            self.i += 1
            out.append(
                Reading(
                    instrument=f"synth{i % 3}",
                    channel=f"ch{i % SERIES // 3:03d}",
                    value=20.0 + (i % 1000) * 0.01,
                    unit="degC",
                    quality=Quality.GOOD,
                    acq_ns=self.start_ns + (i // SERIES) * 1_000_000 + i % SERIES,
                    mono_ns=i,
                )
            )
        return out


def sink(url: str, name: str) -> InfluxSink:
    return InfluxSink(name=name, kind="influxdb", url=url, org="bench", bucket="bench", precision="ms")


async def fill(journal: Journal, gen: Clock, n: int) -> None:
    for start in range(0, n, 5000):
        journal.append_many(gen.readings(min(5000, n - start)))
        await journal.flush()


async def ceiling(url: str, n: int, batch_size: int) -> dict[str, float]:
    """The same requests the forwarder makes (level-1 gzip bodies through the client's write
    service), prepared beforehand: the HTTP client and the server alone."""
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
    from influxdb_client.domain.write_precision import WritePrecision
    from influxdb_client.service.write_service import WriteService

    fmt = LineFormatter(site="bench", cell="bench", kinds={}, default_kind="ceiling")
    gen = Clock(time.time_ns() - 10**12)
    lines = [fmt.format(codec.line_fields(codec.ReadingRecord(i, i, r)))
             for i, r in enumerate(gen.readings(n))]  # fmt: skip
    bodies = [
        gzip.compress("\n".join(lines[i : i + batch_size]).encode(), compresslevel=1)
        for i in range(0, n, batch_size)
    ]
    async with InfluxDBClientAsync(url=url, token="", org="bench") as client:
        api: Any = WriteService(client.api_client)  # type: ignore[no-untyped-call]  # the client is untyped
        t0 = time.perf_counter()
        for body in bodies:
            await api.post_write_async(
                org="bench", bucket="bench", body=body, precision=WritePrecision.NS, content_encoding="gzip",
                content_type="text/plain; charset=utf-8", async_req=False, _return_http_data_only=False,
            )  # fmt: skip
        elapsed = time.perf_counter() - t0
    return {"points": n, "seconds": round(elapsed, 3), "points_per_s": round(n / elapsed)}


async def drain(data_dir: Path, url: str, name: str, backlog: int, ingest: bool) -> dict[str, Any]:
    journal = await Journal.open(
        data_dir, clock=SystemClock(), settings=JournalSection(max_pending=10_000_000)
    )
    gen = Clock(time.time_ns() - 10**12 + (10**11 if ingest else 0))
    await fill(journal, gen, backlog)
    target = journal.last_reading_id
    await journal.set_cursor(name, target - backlog)
    fwd = InfluxForwarder(sink(url, name), journal, site="bench", cell="bench", kinds={}, clock=SystemClock())
    ingested = 0
    stop = asyncio.Event()

    async def producer() -> None:
        nonlocal ingested
        while not stop.is_set():
            journal.append_many(gen.readings(1000))
            ingested += 1000
            await asyncio.sleep(0)  # like a real producer: the writer commits while readings arrive
            if journal.pending > 20_000:
                await journal.flush()  # as fast as the journal commits, no faster (back-pressure)

    t0 = time.perf_counter()
    await fwd.start()
    task = asyncio.create_task(producer()) if ingest else None
    while fwd.cursor < target:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    stop.set()
    if task is not None:
        await task
    await journal.flush()
    committed_during = journal.last_reading_id - target
    # Let it finish what arrived meanwhile, so the server's count can be checked exactly.
    while fwd.cursor < journal.last_reading_id:
        await asyncio.sleep(0.05)
    await fwd.stop()
    total = journal.last_reading_id - (target - backlog)
    await journal.close()
    out: dict[str, Any] = {
        "backlog": backlog,
        "seconds": round(elapsed, 3),
        "points_per_s": round(backlog / elapsed),
        "requests": fwd.requests,
        "forwarded_total": total,
    }
    if ingest:
        out["ingested_while_draining"] = committed_during
        out["ingest_readings_per_s"] = round(committed_during / elapsed)
    return out


def demo_rate(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo"
        subprocess.run(
            [sys.executable, "-m", "daq", "demo", "--duration", str(seconds), "--data-dir", str(data), "--every", "86400"],
            check=True, capture_output=True, timeout=seconds + 120,
        )  # fmt: skip
        with JournalReader(data) as r:
            n, first, last = r.conn.execute(
                "SELECT COUNT(*), MIN(acq_ns), MAX(acq_ns) FROM readings"
            ).fetchone()
            per = dict(
                r.conn.execute("SELECT instrument, COUNT(*) FROM readings GROUP BY instrument").fetchall()
            )
    span = (last - first) / 1e9
    return {
        "readings": n,
        "span_s": round(span, 2),
        "readings_per_s": round(n / span, 1),
        "per_instrument": per,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        vm = Victoria(Path(tmp) / "victoria")
        vm.start()
        try:
            result: dict[str, Any] = {}
            result["ceiling"] = await ceiling(vm.url, args.backlog, 5000)
            result["drain"] = await drain(Path(tmp) / "a", vm.url, "bench-a", args.backlog, ingest=False)
            result["drain_while_ingesting"] = await drain(
                Path(tmp) / "b", vm.url, "bench-b", args.backlog, True
            )
            expected = result["drain"]["forwarded_total"] + result["drain_while_ingesting"]["forwarded_total"]
            deadline = time.monotonic() + 120
            while True:
                stored = vm.count('{__name__="daq_seq"}')
                if stored >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            result["server_check"] = {"forwarded": expected, "stored": stored, "equal": stored == expected}
        finally:
            vm.stop()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backlog", type=int, default=300_000)
    p.add_argument("--demo-seconds", type=float, default=20.0)
    args = p.parse_args()
    logs.configure("warning")  # stdout is for the JSON
    result = asyncio.run(main_async(args))
    demo = demo_rate(args.demo_seconds)
    result["demo"] = demo
    drain_rate = result["drain_while_ingesting"]["points_per_s"]
    result["targets"] = {
        "drain_over_demo_ingest": round(drain_rate / demo["readings_per_s"], 1),
        "at_least_5x_demo": drain_rate >= 5 * demo["readings_per_s"],
        "at_least_100k_per_s": result["drain"]["points_per_s"] >= 100_000,
    }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
