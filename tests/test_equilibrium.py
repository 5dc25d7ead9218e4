"""The Ac-225 equilibrium gate, alone on a manual clock and inside a running daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from daq.clock import ManualClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.equilibrium import DEFAULT_AC225_WAIT_S, EquilibriumGate
from daq.errors import ConfigError
from daq.journal import JournalReader
from daq.model import Quality, Reading, Reason
from simulators.capintec_crc35r import Crc35rSimulator
from tests.calibrators import PAIR
from tests.helpers import config_text, make_config, wait_until


def reading(
    clock: ManualClock, nuclide: str | None = "Ac-225", instrument: str = "dc1", run_id: str | None = None
) -> Reading:
    return Reading(
        instrument=instrument, channel="chamber1", value=1e9, unit="Bq", quality=Quality.GOOD,
        acq_ns=clock.time_ns(), mono_ns=clock.monotonic_ns(), run_id=run_id,
        attrs={"nuclide": nuclide, "reported_value": 1.0, "reported_unit": "GBq"},
    )  # fmt: skip


def test_default_wait_covers_bi213_within_one_percent() -> None:
    assert abs(DEFAULT_AC225_WAIT_S - 5.3 * 3600) < 1e-6
    assert EquilibriumGate.bi213_within_1_percent_s() < DEFAULT_AC225_WAIT_S


def test_ten_minutes_after_t0_is_uncertain_and_after_the_wait_good() -> None:
    clock = ManualClock()
    gate = EquilibriumGate()
    before = gate(reading(clock))
    assert before.quality is Quality.GOOD  # no t0 yet: nothing to judge against
    gate.set_t0(clock.time_ns(), instrument="dc1")
    clock.advance(600)
    early = gate(reading(clock))
    assert early.quality is Quality.UNCERTAIN
    assert early.reason == Reason.DAUGHTERS_NOT_IN_EQUILIBRIUM == "daughters_not_in_equilibrium"
    assert early.attrs is not None
    assert early.attrs["since_t0_s"] == 600
    assert early.value == 1e9  # the value is kept; only its quality says why to doubt it
    clock.advance(DEFAULT_AC225_WAIT_S - 600 + 1)
    late = gate(reading(clock))
    assert late.quality is Quality.GOOD
    assert late.reason is None


def test_only_ac225_and_only_the_instrument_or_run_the_t0_belongs_to() -> None:
    clock = ManualClock()
    gate = EquilibriumGate(wait_s=3600)
    gate.set_t0(clock.time_ns(), instrument="dc1")
    gate.set_t0(clock.time_ns(), run_id="B-42")
    clock.advance(60)
    cases = {
        "other nuclide": (reading(clock, "F-18"), Quality.GOOD),
        "no nuclide": (reading(clock, None), Quality.GOOD),
        "spelling Ac225": (reading(clock, "Ac225"), Quality.UNCERTAIN),
        "other instrument": (reading(clock, instrument="dc2"), Quality.GOOD),
        "other instrument, run with t0": (reading(clock, instrument="dc2", run_id="B-42"), Quality.UNCERTAIN),
        "other run": (reading(clock, instrument="dc2", run_id="B-43"), Quality.GOOD),
    }
    for name, (r, want) in cases.items():
        assert gate(r).quality is want, name


def test_a_global_t0_applies_to_all_and_a_bad_reading_stays_bad() -> None:
    clock = ManualClock()
    gate = EquilibriumGate(wait_s=3600)
    gate.set_t0(clock.time_ns())
    clock.advance(10)
    r = reading(clock, instrument="anything")
    assert gate(r).quality is Quality.UNCERTAIN
    assert r.quality is Quality.GOOD  # frozen: the gate returns a new reading
    bad = dataclasses.replace(reading(clock), quality=Quality.BAD, reason=Reason.PARSE_ERROR)
    assert gate(bad) is bad


def test_a_reading_taken_before_the_t0_is_not_judged_by_it() -> None:
    clock = ManualClock()
    gate = EquilibriumGate()
    r = reading(clock)
    gate.set_t0(clock.time_ns() + 10**9)
    assert gate(r) is r


def test_wait_is_configurable_and_checked(tmp_path: Path) -> None:
    cfg = parse_config(config_text(tmp_path, [], "[physics]\nac225_equilibrium_wait_s = 7200\n"))
    assert Daemon(cfg).equilibrium.wait_s == 7200
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(tmp_path, [], "[physics]\nac225_equilibrium_wait_s = -1\n"), path="x.toml")
    assert info.value.key_path == "physics.ac225_equilibrium_wait_s"
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(tmp_path, [], "[physics]\nac255_wait = 1\n"), path="x.toml")
    assert info.value.key_path == "physics.ac255_wait"


async def test_daemon_flags_early_ac225_assays(data_dir: Path) -> None:
    pair = PAIR["crc35r"]
    sims = [Crc35rSimulator(options={"chambers": "1", "nuclide": "Ac225"}) for _ in range(2)]
    listeners = [await s.serve("tcp://127.0.0.1:0") for s in sims]
    instruments = [
        pair.instrument(name, lst.url, chambers=[1])
        for name, lst in zip(("early", "late"), listeners, strict=True)
    ]
    daemon = Daemon(make_config(data_dir, instruments))
    now = time.time_ns()
    daemon.equilibrium.set_t0(now - 600 * 10**9, instrument="early")  # separated 10 min ago
    daemon.equilibrium.set_t0(now - int(6 * 3600 * 1e9), instrument="late")  # 6 h ago: past the wait
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: len(daemon.supervisors) == 2 and all(s.readings >= 3 for s in daemon.supervisors)
        )
    finally:
        daemon.request_stop()
        await task
        for lst in listeners:
            await lst.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["value"] is not None]
    early = [x for x in rows if x["instrument"] == "early"]
    late = [x for x in rows if x["instrument"] == "late"]
    assert early
    assert late
    assert all(x["quality"] == Quality.UNCERTAIN for x in early)
    assert all(x["reason"] == "daughters_not_in_equilibrium" for x in early)
    assert all(x["attrs"]["nuclide"] == "Ac-225" for x in early)
    assert all(x["quality"] == Quality.GOOD for x in late)
