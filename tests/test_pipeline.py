"""The declared reading pipeline: frozen readings, stages in one order, and what that order fixes.

The daemon-level tests run the real daemon against real simulators (Modbus synthesizer,
CRC-35R calibrator): the run trigger under an unsynchronised clock, and a run-level t0 for the
Ac-225 gate, both pass because of where the stages sit, not because of special cases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import pytest

from daq.clock import ManualClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality, Reading, Reason
from daq.pipeline import Pipeline
from daq.runs import store
from simulators.capintec_crc35r import Crc35rSimulator
from simulators.synth_modbus import SynthModbusSimulator
from tests.calibrators import PAIR
from tests.helpers import config_text, make_config, wait_until
from tests.test_runs import synth_config

TRIGGER = "trigger:synth/sequence_running"


def ac225(clock: ManualClock, *, instrument: str = "dc1", run_id: str | None = None) -> Reading:
    return Reading(
        instrument=instrument, channel="chamber1", value=1e9, unit="Bq", quality=Quality.GOOD,
        acq_ns=clock.time_ns(), mono_ns=clock.monotonic_ns(), run_id=run_id,
        attrs={"nuclide": "Ac-225", "reported_value": 1.0, "reported_unit": "GBq"},
    )  # fmt: skip


def test_readings_are_frozen() -> None:
    r = ac225(ManualClock())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.quality = Quality.BAD  # type: ignore[misc]


def test_the_daemon_declares_its_stages_in_order(tmp_path: Path) -> None:
    daemon = Daemon(parse_config(config_text(tmp_path, []), path="cell.toml"))
    assert daemon.pipeline.names == ("canonicalise", "runs", "equilibrium", "clock", "alarms")


def test_a_stage_is_added_in_one_line_at_a_visible_position(tmp_path: Path) -> None:
    clock = ManualClock()
    daemon = Daemon(parse_config(config_text(tmp_path, []), path="cell.toml"), clock=clock)
    seen: list[Reading] = []

    def probe(r: Reading) -> Reading:
        seen.append(r)
        return r

    daemon.pipeline.insert("probe", probe, after="runs")  # the one line
    assert daemon.pipeline.names == ("canonicalise", "runs", "probe", "equilibrium", "clock", "alarms")
    # Every stage of the daemon has something to do with this reading.
    daemon.run_attribution.run_id = "R-1"
    daemon.equilibrium.set_t0(clock.time_ns(), run_id="R-1")
    daemon.clock_flag.enabled, daemon.clock_flag.synchronised = True, False
    clock.advance(60)
    made = ac225(clock, run_id="set-by-a-driver")
    out = daemon.pipeline(made)
    # The probe sits after run attribution and before every flag the daemon adds.
    (probed,) = seen
    assert probed.run_id == "R-1"
    assert probed.quality is Quality.GOOD
    # The gate judged the reading by its run's t0 and the clock flag left it alone (not GOOD).
    assert out.run_id == "R-1"
    assert (out.quality, out.reason) == (Quality.UNCERTAIN, Reason.DAUGHTERS_NOT_IN_EQUILIBRIUM)
    # The driver's reading is untouched: every stage returned a new one.
    assert made.run_id == "set-by-a-driver"
    assert made.quality is Quality.GOOD
    assert made.attrs is not None
    assert "t0_ns" not in made.attrs


def test_pipeline_positions_are_checked() -> None:
    def same(r: Reading) -> Reading:
        return r

    p = Pipeline([("a", same), ("c", same)])
    p.insert("b", same, before="c")
    p.insert("z", same)
    assert p.names == ("a", "b", "c", "z")
    assert repr(p) == "Pipeline(a -> b -> c -> z)"
    with pytest.raises(ValueError, match="already has a stage named 'a'"):
        p.insert("a", same)
    with pytest.raises(ValueError, match="no stage named 'q'"):
        p.insert("x", same, after="q")


def test_stage_objects_functions_and_partials_are_called_in_order() -> None:
    # Stage objects are called through their __call__ bound once (daq.pipeline._callable):
    # the same calls, in the same order, with each stage's state, as calling the object.
    calls: list[str] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name
            self.seen = 0

        def __call__(self, r: Reading) -> Reading:
            self.seen += 1
            calls.append(self.name)
            return dataclasses.replace(r, unit=r.unit + self.name)

    def tagged(name: str, r: Reading) -> Reading:
        calls.append(name)
        return dataclasses.replace(r, unit=r.unit + name)

    first, last = Tag("a"), Tag("d")
    p = Pipeline([("a", first), ("b", functools.partial(tagged, "b")), ("d", last)])
    p.insert("c", lambda r: tagged("c", r), before="d")
    r = Reading("i", "c", 1.0, "", Quality.GOOD, 1, 2)
    assert p(r).unit == "abcd"
    assert p(r).unit == "abcd"
    assert calls == list("abcd") * 2
    assert (first.seen, last.seen) == (2, 2)


def test_run_attribution_is_the_only_source_of_run_id(tmp_path: Path) -> None:
    clock = ManualClock()
    daemon = Daemon(parse_config(config_text(tmp_path, []), path="cell.toml"), clock=clock)
    runs = daemon.run_attribution
    assert daemon.pipeline(ac225(clock, run_id="from-a-driver")).run_id is None  # no run open
    runs.run_id = "R-2"
    assert daemon.pipeline(ac225(clock)).run_id == "R-2"
    runs.pin("tlc1", "R-1")  # a scan started for R-1 keeps its readings there
    assert daemon.pipeline(ac225(clock, instrument="tlc1")).run_id == "R-1"
    runs.unpin("tlc1")
    assert daemon.pipeline(ac225(clock, instrument="tlc1")).run_id == "R-2"


async def test_run_trigger_sees_the_drivers_value_on_an_unsynchronised_clock(data_dir: Path) -> None:
    """With ``flag_unsynchronised = true`` and the clock known unsynchronised, the synthesizer's
    ``sequence_running`` still opens a run on its rising edge and closes it on its falling edge;
    the journaled readings carry the clock flag."""
    # Idle 800 s of process time at 400x = 2 s before the sequence starts: time to set the clock
    # unsynchronised before any edge; the 1590 s synthesis then takes about 4 s.
    sim = SynthModbusSimulator(options={"time_scale": "400", "idle_s": "800", "update_s": "0.02"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    port = int(listener.url.rsplit(":", 1)[1])
    text = synth_config(data_dir, port).replace(
        "[clock]\ncheck_every_s = 0.05\n",
        '[clock]\ncheck_every_s = 0.05\nsync_source = "none"\nflag_unsynchronised = true\n',
    )
    daemon = Daemon(parse_config(text, path="synth.toml"))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "clock" in daemon.services)
        monitor: Any = daemon.services["clock"]
        # What adjtimex reports for an unsynchronised clock (the source "none" reads unknown).
        monitor.sync = {"synchronised": False, "source": "test"}
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        assert runs.runs_started == 0  # no edge before the clock was unsynchronised
        await wait_until(lambda: runs.runs_sealed >= 1, timeout=30)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        run = next(x for x in store.list_runs(r.conn) if x["started_by"] == TRIGGER)
        # Poll slots a loaded machine missed, and polls it timed out, are journaled as gap
        # records (BAD, no value): what is checked here is the values the driver read.
        rows = [
            x
            for x in r.readings(limit=1_000_000)
            if x["channel"] == "sequence_running" and not (x["quality"] == Quality.BAD and x["value"] is None)
        ]
    assert run["ended_by"] == TRIGGER
    assert run["seal"]
    in_run = [x for x in rows if x["run_id"] == run["run_id"]]
    assert in_run
    assert all(x["value"] == 1.0 for x in in_run)
    # The journal holds the flagged readings: the flag was added after the trigger saw them.
    assert all(
        (x["quality"], x["reason"]) == (Quality.UNCERTAIN, Reason.CLOCK_UNSYNCHRONISED) for x in in_run
    )
    after = [x for x in rows if x["id"] > in_run[-1]["id"]]
    assert after
    assert after[0]["value"] == 0.0
    assert after[0]["run_id"] is None  # the falling edge closed the run


async def test_a_run_level_t0_flags_the_runs_ac225_readings(data_dir: Path) -> None:
    """``daq runs t0`` without an instrument records the run's t0; Ac-225 readings attributed to
    that run are flagged by the equilibrium gate (not only after an instrument-level t0)."""
    pair = PAIR["crc35r"]
    sim = Crc35rSimulator(options={"chambers": "1", "nuclide": "Ac225"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    daemon = Daemon(make_config(data_dir, [pair.instrument("dc1", listener.url, chambers=[1])]))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services and daemon.supervisors[0].readings >= 2)
        runs: Any = daemon.services["runs"]
        run = await runs.open_run(
            batch="AC-1", product="[225Ac]Ac-PSMA-617", nuclide="Ac-225", operator="jd", actor="jd"
        )
        t0 = await runs.mark_t0(actor="jd", reason="separation", ts_ns=time.time_ns() - 60 * 10**9)
        assert (t0["run_id"], t0["instrument"]) == (run["run_id"], None)  # a run-level t0
        n = daemon.supervisors[0].readings
        await wait_until(lambda: daemon.supervisors[0].readings >= n + 3)
        await runs.close_run(actor="jd", reason="done")
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings(limit=100_000) if x["value"] is not None]
    before = [x for x in rows if x["run_id"] is None]
    after_t0 = [x for x in rows if x["run_id"] == run["run_id"] and x["acq_ns"] >= t0["ts_ns"]]
    assert before
    assert all(x["quality"] == Quality.GOOD for x in before)  # no t0 applies outside the run
    assert len(after_t0) >= 3
    for x in after_t0:
        assert (x["quality"], x["reason"]) == (Quality.UNCERTAIN, Reason.DAUGHTERS_NOT_IN_EQUILIBRIUM)
        assert x["attrs"]["t0_ns"] == t0["ts_ns"]


async def test_a_scan_started_for_a_run_keeps_its_readings_in_that_run(data_dir: Path) -> None:
    """The scanner driver no longer sets ``run_id``: the TLC service pins the scanner to the
    scan's run, and the ``runs`` stage attributes the scan's readings to it."""
    from tests.tlc_helpers import record_scans

    await record_scans(
        data_dir,
        {"sim": {"rcp": "97"}, "scan": {"batch": "LU-0421", "operator": "jd", "run_id": "RUN-7"}},
        {"sim": {"rcp": "99"}, "seed": 2},
    )
    with JournalReader(data_dir) as r:
        counts = [x for x in r.readings(limit=100_000) if x["channel"] == "counts" and x["value"] is not None]
        traces = r.conn.execute("SELECT run_id FROM traces ORDER BY id").fetchall()
    scans: dict[str, set[str | None]] = {}
    for x in counts:
        scans.setdefault(x["attrs"]["scan_id"], set()).add(x["run_id"])
    assert list(scans.values()) == [{"RUN-7"}, {None}]  # the second scan had no run: none pinned
    assert traces == [("RUN-7",), (None,)]


def test_every_stage_sees_the_canonical_reading(tmp_path: Path) -> None:
    """The head of the pipeline applies the journal's canonical form: a NaN is BAD before the
    run trigger sees it, ``-0.0`` is ``0.0``, and a canonical reading passes unchanged."""
    clock = ManualClock()
    daemon = Daemon(parse_config(config_text(tmp_path, []), path="cell.toml"), clock=clock)
    seen: list[Reading] = []

    def probe(r: Reading) -> Reading:
        seen.append(r)
        return r

    daemon.pipeline.insert("probe", probe, after="canonicalise")
    nan = dataclasses.replace(ac225(clock), value=float("nan"))
    out = daemon.pipeline(nan)
    assert (seen[0].quality, seen[0].reason, seen[0].value) == (Quality.BAD, Reason.NON_FINITE_VALUE, None)
    assert out.quality is Quality.BAD
    zero = daemon.pipeline(dataclasses.replace(ac225(clock), value=-0.0))
    assert zero.value == 0.0
    assert str(zero.value) == "0.0"
    good = ac225(clock)
    assert daemon.pipeline(good) == good
