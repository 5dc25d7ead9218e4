"""Time integrity: clock steps seen through an injected clock, the sync state, flagged readings."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from daq.clock import ManualClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality, Reason
from daq.runs.clock import read_sync_state, sync_state_adjtimex
from daq.runs.export import verify_export, write_export
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.runs_helpers import vdc_config


async def test_clock_step_is_audited_and_readings_keep_monotonic_order(
    data_dir: Path, tmp_path: Path
) -> None:
    clock = ManualClock()
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url), clock=clock)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "clock" in daemon.services and "runs" in daemon.services)
        sup = daemon.supervisors[0]
        await wait_until(lambda: sup.readings >= 5)
        runs: Any = daemon.services["runs"]
        monitor: Any = daemon.services["clock"]
        run = await runs.open_run(batch="B", product="P", nuclide="F-18", operator="o", actor="alice")
        await wait_until(lambda: sup.readings >= 10)
        before = sup.readings
        clock.step_wall(-30.0)  # NTP (or someone) steps the wall clock back 30 s
        await wait_until(lambda: monitor.steps == 1)
        await wait_until(lambda: sup.readings >= before + 10)
        await runs.close_run(actor="alice")
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    with JournalReader(data_dir) as r:
        steps = [a for a in r.audit() if a["action"] == "clock_step"]
        rows = r.readings(limit=1_000_000)
    assert len(steps) == 1
    assert steps[0]["detail"]["step_ns"] == -30_000_000_000
    assert steps[0]["detail"]["now"].endswith("+00:00")
    assert steps[0]["run_id"] == run["run_id"]  # the step is in the audit trail of the run it hit
    mine = [x for x in rows if x["instrument"] == "dc1"]
    monos = [x["mono_ns"] for x in mine]
    seqs = [x["seq"] for x in mine]
    acqs = [x["acq_ns"] for x in mine]
    # Commit order is monotonic order: sequence numbers and monotonic times never go back ...
    assert monos == sorted(monos)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # ... while the wall clock did.
    assert any(b < a for a, b in itertools.pairwise(acqs))
    out = tmp_path / "export"
    write_export(data_dir, run["run_id"], out, "json")
    assert verify_export(out, data_dir=data_dir).ok
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clock_steps"] == 1


async def test_sync_state_is_recorded_and_unsynchronised_readings_flagged(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02"}).serve("tcp://127.0.0.1:0")
    extra = '[clock]\nsync_source = "none"\nflag_unsynchronised = true\n'
    cfg = vdc_config(data_dir, sim.url)
    text = cfg.text.replace("\n[clock]\ncheck_every_s = 0.05\n", "\n" + extra)
    daemon = Daemon(parse_config(text, path="cell.toml"))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "clock" in daemon.services)
        sup = daemon.supervisors[0]
        await wait_until(lambda: sup.readings >= 3)
        monitor: Any = daemon.services["clock"]
        assert monitor.status()["sync"] == {"synchronised": None, "source": "none"}
        # The sync state becomes known-unsynchronised (as adjtimex would report it).
        monitor.sync = {"synchronised": False, "source": "test"}
        n = sup.readings
        await wait_until(lambda: sup.readings >= n + 5)
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    with JournalReader(data_dir) as r:
        sync = [a for a in r.audit() if a["action"] == "clock_sync"]
        rows = [x for x in r.readings(limit=100_000) if x["channel"] == "activity"]
    assert sync[0]["detail"] == {"synchronised": None, "source": "none"}
    flagged = [x for x in rows if x["reason"] == Reason.CLOCK_UNSYNCHRONISED]
    assert len(flagged) >= 5
    assert all(x["quality"] == Quality.UNCERTAIN for x in flagged)
    assert rows[0]["quality"] == Quality.GOOD  # before: unknown sync state flags nothing


def test_sync_state_sources_answer_or_say_unavailable() -> None:
    kernel = sync_state_adjtimex()
    assert kernel is not None  # Linux (the daemon's platform) answers adjtimex(2) with modes = 0
    assert kernel["source"] == "adjtimex"
    assert isinstance(kernel["synchronised"], bool)
    assert kernel["maxerror_us"] >= 0
    assert read_sync_state("auto")["source"] in {"adjtimex", "timedatectl", "unavailable"}
    assert read_sync_state("none") == {"synchronised": None, "source": "none"}
