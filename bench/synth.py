"""Synthesizer benchmark: 3 synthesizers x 100 channels at 10 Hz, over Modbus TCP and over OPC UA.

Prints JSON per protocol: daemon CPU % of one core, poll jitter p50/p99, acquisition-to-journal
latency p50/p99 and readings lost (must be 0).

    .venv/bin/python bench/synth.py [--duration 60] [--protocol both|modbus|opcua]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellbench import Probe, SimProcess, free_port, machine, make_config, run_daemon

from simulators.synth_modbus_map import register_map
from simulators.synth_opcua import SynthOpcUaSimulator

CORE_MODBUS = len(register_map(extra_channels=0))


def modbus_instruments(
    n: int, channels: int, period_s: float, sims: list[SimProcess]
) -> list[dict[str, Any]]:
    extra = max(0, channels - CORE_MODBUS)
    out = []
    for i in range(n):
        sim = SimProcess("synth-modbus", "tcp://127.0.0.1:0", {"extra_channels": extra, "update_s": period_s})
        sims.append(sim)
        out.append(
            {
                "name": f"synth{i + 1}",
                "kind": "modbus",
                "port": sim.url,
                "period_s": period_s,
                "timeout_s": period_s * 0.8,
                "channels": register_map(extra_channels=extra)[:channels],
            }
        )
    return out


CORE_OPCUA = len(SynthOpcUaSimulator(options={}).node_map())


def opcua_instruments(n: int, channels: int, period_s: float, sims: list[SimProcess]) -> list[dict[str, Any]]:
    extra = max(0, channels - CORE_OPCUA)
    nodes = SynthOpcUaSimulator(options={"extra_channels": str(extra)}).node_map()[:channels]
    out = []
    for i in range(n):
        listen = f"opc.tcp://127.0.0.1:{free_port()}"
        sim = SimProcess("synth-opcua", listen, {"extra_channels": extra, "update_s": period_s})
        sims.append(sim)
        out.append(
            {
                "name": f"synth{i + 1}",
                "kind": "opcua",
                "url": sim.url,
                "publishing_interval_ms": period_s * 1000,
                "sampling_interval_ms": period_s * 1000,
                "nodes": nodes,
            }
        )
    return out


def run(protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    sims: list[SimProcess] = []
    try:
        build = modbus_instruments if protocol == "modbus" else opcua_instruments
        instruments = build(args.synths, args.channels, 1 / args.rate_hz, sims)
        jitter = {inst["name"]: ("reactor_temp", 1 / args.rate_hz) for inst in instruments}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_config(Path(tmp) / "data", instruments)
            probe = Probe(jitter_channels=jitter)
            result = asyncio.run(run_daemon(cfg, probe, warmup_s=args.warmup, duration_s=args.duration))
    finally:
        for sim in sims:
            sim.stop()
    return {"protocol": protocol, "synthesizers": args.synths, "channels_each": args.channels,
            "rate_hz": args.rate_hz, "duration_s": args.duration, **result}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["both", "modbus", "opcua"], default="both")
    ap.add_argument("--synths", type=int, default=3)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    args = ap.parse_args()
    protocols = ["modbus", "opcua"] if args.protocol == "both" else [args.protocol]
    results = [run(p, args) for p in protocols]
    print(json.dumps({"benchmark": "synth", "machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
