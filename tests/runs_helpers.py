"""Shared by the runs, export and report tests: a recorded run over a real simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from daq.configfile.load import Config
from daq.daemon import Daemon
from daq.journal.schema import CHAINED
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import make_config, wait_until

TLC = "traces" in CHAINED and "analyses" in CHAINED


def vdc_config(data_dir: Path, url: str, extra: str = "") -> Config:
    inst = {"name": "dc1", "kind": "veenstra-vdc404", "port": url, "stale_after_s": 2.0,
            "backoff_initial_s": 0.1, "backoff_cap_s": 0.5}  # fmt: skip
    clock = "\n[clock]\ncheck_every_s = 0.05\n"
    return make_config(data_dir, [inst], extra + clock)


class T0Recorder:
    """Wraps ``daemon.equilibrium`` (the EquilibriumGate) to see the ``set_t0`` calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, str | None, str | None]] = []

    def set_t0(self, ts_ns: int, *, instrument: str | None = None, run_id: str | None = None) -> None:
        self.calls.append((ts_ns, instrument, run_id))
        if self.inner is not None:
            self.inner.set_t0(ts_ns, instrument=instrument, run_id=run_id)


@dataclasses.dataclass
class Recorded:
    run_id: str
    run: dict[str, Any]
    annotation: str
    t0_calls: list[tuple[int, str | None, str | None]]


def _trace_values(run_id: str, now: int) -> dict[str, Any]:
    positions = [i * 0.5 for i in range(200)]
    counts = [5 + (400 if 20 <= p <= 30 else 0) + (40 if 70 <= p <= 80 else 0) for p in positions]
    return {
        "trace_id": "T-1", "instrument": "tlc1", "run_id": run_id, "started_ns": now - 10**9, "ended_ns": now,
        "complete": 1, "params": json.dumps({"origin_mm": 10.0, "front_mm": 90.0}),
        "positions_mm": json.dumps(positions), "counts": json.dumps(counts), "raw": b"125; 48\r\n",
    }  # fmt: skip


def _analysis(
    run_id: str, now: int, aid: str, rcp: float, supersedes: str | None, actor: str
) -> dict[str, Any]:
    rois = [
        {"label": "product", "kind": "product", "rf_from": 0.1, "rf_to": 0.3, "gross_counts": 4400.0,
         "background_counts": 100.0, "net_counts": 4300.0},
        {"label": "free", "kind": "impurity", "rf_from": 0.7, "rf_to": 0.9, "gross_counts": 500.0,
         "background_counts": 100.0, "net_counts": 400.0},
    ]  # fmt: skip
    return {
        "analysis_id": aid, "trace_id": "T-1", "run_id": run_id, "ts_ns": now, "method": "psma-tlc",
        "method_version": "2" if supersedes else "1", "actor": actor,
        "reason": "ROI moved after review" if supersedes else None, "supersedes": supersedes,
        "results": json.dumps({"rois": rois, "background": 5.0, "rcp_percent": rcp, "limit_percent": 95.0,
                               "passed": rcp >= 95.0, "complete": True}),
    }  # fmt: skip


async def record_run(data_dir: Path, *, readings: int = 25) -> Recorded:
    """Run a daemon on a VDC-404 simulator: one run with readings, an annotation, t0, a TLC
    trace with an analysis, then a re-integration after the run was sealed."""
    sim = await Vdc404Simulator(options={"interval_s": "0.03", "nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url))
    recorder = T0Recorder(getattr(daemon, "equilibrium", None))
    daemon.equilibrium = recorder  # type: ignore[assignment]
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services and bool(daemon.supervisors))
        sup = daemon.supervisors[0]
        await wait_until(lambda: sup.readings >= 3)
        runs: Any = daemon.services["runs"]
        run = await runs.open_run(batch="LOT 42/A", product="[18F]FDG", nuclide="F18", operator="alice", actor="alice",
                               reason="production")  # fmt: skip
        start = sup.readings
        await wait_until(lambda: sup.readings >= start + readings)
        note = "vial swapped to the spare shield"
        await runs.annotate(text=note, actor="bob", reason="shield cracked", instrument="dc1")
        await runs.mark_t0(actor="alice", reason="labelling started", instrument="dc1")
        journal = daemon.journal
        assert journal is not None
        if TLC:
            now = daemon.clock.time_ns()
            journal.record("traces", _trace_values(run["run_id"], now))
            journal.record("analyses", _analysis(run["run_id"], now, "A-1", 91.5, None, "daemon"))
        stopped = await runs.close_run(actor="alice", reason="synthesis done")
        if TLC:
            now = daemon.clock.time_ns()
            journal.record("analyses", _analysis(run["run_id"], now, "A-2", 96.25, "A-1", "carol"))
            journal.audit("tlc_reintegrate", actor="carol", subject="T-1",
                          detail={"analysis_id": "A-2", "supersedes": "A-1", "reason": "ROI moved after review"})  # fmt: skip
            await journal.flush()
        await wait_until(lambda: sup.readings >= start + readings + 3)
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    return Recorded(run["run_id"], stopped, note, recorder.calls)
