"""Acquisition-to-tail latency with the demo hot cell running; prints JSON.

Runs the demo cell (``config/demo.toml``, each instrument on its simulator, as ``daq demo``
does) with the API on a free port, and a real ``daq tail --json`` process following it. For
every reading tail prints, latency = the moment the line reaches this process minus the
reading's acquisition time (``acq_ns``, taken when the instrument's bytes arrived). Both
clocks are this machine's wall clock. A reading is streamed once its group commit returns,
so it waits up to the journal's commit window plus the commit (fsync) itself: the window is
printed beside the figures.

    .venv/bin/python bench/tail.py [--duration 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from daq import logs
from daq.cli import simulate
from daq.cli.demo import SIMULATION, _default_config, attach
from daq.configfile.load import Config, load_config
from daq.daemon import Daemon
from simulators.base import Listener


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def run(duration_s: float, warmup_s: float, seed: int) -> dict[str, object]:
    cfg = load_config(_default_config())
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        cfg = cfg.with_data_dir(Path(tmp))
        model = cfg.model.model_copy(update={"api": cfg.model.api.model_copy(update={"port": port})})
        cfg = Config(model, path=cfg.path, text=cfg.text)
        listeners: list[Listener] = []
        instruments = []
        for inst in cfg.instruments:
            spec = SIMULATION[inst.name]
            listener = await simulate.start(
                spec.kind, spec.listen, seed=seed, faults=spec.faults, options=spec.options
            )
            listeners.append(listener)
            instruments.append(attach(inst, listener))
        daemon = Daemon(cfg.with_instruments(instruments), seed=seed)
        samples: list[tuple[int, int]] = []
        lines: queue.Queue[tuple[int, bytes] | None] = queue.Queue()

        async def measure(d: Daemon) -> None:
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(  # noqa: ASYNC220 (read on a thread, not the loop)
                [sys.executable, "-m", "daq", "tail", "--api", url, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.put((time.time_ns(), line))
                lines.put(None)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                warm_ns = time.time_ns() + int(warmup_s * 1e9)
                await asyncio.sleep(duration_s + warmup_s)
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait)
                await asyncio.to_thread(reader.join, 10)
            while True:
                item = lines.get_nowait() if not lines.empty() else None
                if item is None:
                    break
                got_ns, raw = item
                r = json.loads(raw)
                if r["acq_ns"] >= warm_ns:
                    samples.append((got_ns, r["acq_ns"]))
            d.request_stop()

        try:
            await daemon.run(on_ready=measure)
        finally:
            for listener in listeners:
                await listener.close()
        commit_window_s = cfg.journal.commit_window_s
    latencies = [(got - acq) / 1e6 for got, acq in samples]
    if not latencies:
        raise SystemExit("no readings reached tail")
    p99 = percentile(latencies, 99)
    return {
        "bench": "tail",
        "what": "acquisition-to-tail latency, demo hot cell, daq tail --json as a separate process",
        "instruments": [i.name for i in instruments],
        "duration_s": duration_s,
        "readings": len(latencies),
        "readings_per_s": round(len(latencies) / duration_s, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(p99, 1),
            "max": round(max(latencies), 1),
        },
        "commit_window_ms": commit_window_s * 1000,
        "target_p99_ms": 200,
        "meets_target": p99 < 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logs.configure("error")
    print(json.dumps(asyncio.run(run(args.duration, args.warmup, args.seed)), indent=2))


if __name__ == "__main__":
    main()
