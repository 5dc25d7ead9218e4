"""Store and forward to a real server: VictoriaMetrics through the InfluxDB v2 write API.

Points are read back through VictoriaMetrics' export API and compared with the journal, per
series: counts, sequence numbers, values and qualities. VictoriaMetrics keeps milliseconds,
so timestamps are compared at millisecond precision (the simulators send far less than one
reading per millisecond per channel).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daq.clock import SystemClock
from daq.config.load import Config, parse_config
from daq.daemon import Daemon
from daq.forward.forwarder import ForwardService, InfluxForwarder
from daq.journal import Journal, JournalReader
from daq.model import Quality, Reading
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.victoria import Victoria, victoria_server

KIND = "veenstra-vdc404"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    yield from victoria_server(tmp_path)


def sink_toml(url: str, **extra: Any) -> str:
    settings = {
        "name": "central",
        "kind": "influxdb",
        "url": url,
        "org": "radiopharmacy",
        "bucket": "hotcell",
        "batch_size": 500,
        "max_age_s": 0.1,
        "backoff_initial_s": 0.05,
        "backoff_cap_s": 0.5,
        **extra,
    }
    lines = ["[[sinks]]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def cell_config(data_dir: Path, sim_url: str | None, sink: str) -> Config:
    text = f"""
[daemon]
data_dir = {json.dumps(str(data_dir))}
site = "test site"
cell = "cell,1"

[journal]
commit_window_s = 0.02
"""
    if sim_url is not None:
        text += f"""
[[instruments]]
name = "dc1"
kind = "{KIND}"
port = "{sim_url}"
stale_after_s = 2.0
backoff_initial_s = 0.05
backoff_cap_s = 0.5
"""
    return parse_config(text + "\n" + sink, path="test.toml")


def forwarder(daemon: Daemon) -> InfluxForwarder:
    svc = daemon.services["forward"]
    assert isinstance(svc, ForwardService)
    return svc.forwarders[0]


Series = dict[tuple[str, str], dict[int, dict[str, float]]]


def journal_series(data_dir: Path, *, exclude_ids: set[int] = frozenset()) -> tuple[Series, int]:  # type: ignore[assignment]
    """Per (instrument, channel): {timestamp ms: {"seq", "quality", "value"?}} and the row count."""
    out: Series = {}
    n = 0
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=10_000_000)
    for row in rows:
        if row["id"] in exclude_ids:
            continue
        n += 1
        # VictoriaMetrics keeps string fields (unit, reason) as 0: their presence is compared.
        sample: dict[str, float] = {"seq": row["seq"], "quality": row["quality"], "unit": 0}
        if row["reason"]:
            sample["reason"] = 0
        if row["value"] is not None and math.isfinite(row["value"]):
            sample["value"] = row["value"]
        per = out.setdefault((row["instrument"], row["channel"]), {})
        assert row["acq_ns"] // 1_000_000 not in per, "two readings of one series in one millisecond"
        per[row["acq_ns"] // 1_000_000] = sample
    return out, n


def server_series(vm: Victoria) -> tuple[Series, int]:
    """The same shape from the server's export; counts every stored sample of every field."""
    out: Series = {}
    samples = 0
    for s in vm.export():
        name: str = s["metric"]["__name__"]
        field = name.rsplit("_", 1)[1]
        key = (s["metric"]["instrument"], s["metric"]["channel"])
        per = out.setdefault(key, {})
        for ts, v in zip(s["timestamps"], s["values"], strict=True):
            samples += 1
            per.setdefault(ts, {})[field] = v
    return out, samples


async def wait_server_matches(vm: Victoria, data_dir: Path, exclude_ids: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Wait until the server holds exactly the journal, then assert it per series."""
    expected, _ = journal_series(data_dir, exclude_ids=exclude_ids)
    n_fields = sum(len(v) for per in expected.values() for v in per.values())
    got: Series = {}
    samples = -1

    def check() -> bool:
        nonlocal got, samples
        got, samples = server_series(vm)
        return samples >= n_fields

    await wait_until(check, timeout=60, interval=0.5)
    assert samples == n_fields  # exactly once: no replay stored twice
    assert got.keys() == expected.keys()
    for key in expected:
        assert len(got[key]) == len(expected[key]), key
        assert got[key].keys() == expected[key].keys(), key
        for ts, sample in expected[key].items():
            assert got[key][ts].keys() == sample.keys(), (key, ts)
            for field, value in sample.items():
                # VictoriaMetrics stores floats with about 12 significant digits.
                assert math.isclose(got[key][ts][field], value, rel_tol=1e-11), (key, ts, field)


async def run_until(daemon: Daemon, condition: Any, timeout: float = 60) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        await wait_until(lambda: condition(daemon), timeout=timeout)
    finally:
        daemon.request_stop()
        await task


async def drain(data_dir: Path, url: str, **extra: Any) -> None:
    """Run the daemon without instruments until the sink has everything (no new readings)."""
    daemon = Daemon(cell_config(data_dir, None, sink_toml(url, **extra)))
    await run_until(daemon, lambda d: d.services and forwarder(d).pending == 0 and forwarder(d).cursor > 0)


# -- the acceptance tests ------------------------------------------------------------------------


async def test_outage_every_reading_arrives_exactly_once(data_dir: Path, vm: Victoria) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "Lu-177"}).serve(
        "tcp://127.0.0.1:0"
    )
    daemon = Daemon(cell_config(data_dir, sim.url, sink_toml(vm.url)))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        fwd = forwarder(daemon)
        await wait_until(lambda: fwd.points_written >= 30, timeout=30)
        await asyncio.to_thread(vm.stop)  # the server goes away while readings flow
        await wait_until(lambda: fwd.last_error is not None and fwd.pending >= 40, timeout=30)
        assert fwd.status()["state"] == "retrying"
        written = fwd.points_written
        await asyncio.sleep(0.5)
        assert fwd.points_written == written
        await asyncio.to_thread(vm.start)
        await wait_until(lambda: fwd.points_written > written + 40 and fwd.pending < 20, timeout=60)
        status = daemon.status()["services"]["forward"]["sinks"]["central"]
        assert status["last_error"] is not None
        assert status["retries"] >= 1
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    await drain(data_dir, vm.url)  # what was journaled after the last write, at shutdown
    await wait_server_matches(vm, data_dir)
    _, n = journal_series(data_dir)
    assert n >= 100


async def test_poison_point_is_quarantined_and_audited_all_others_arrive(
    data_dir: Path, vm: Victoria
) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(cell_config(data_dir, sim.url, sink_toml(vm.url, max_age_s=0.3)))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        fwd = forwarder(daemon)
        await wait_until(lambda: fwd.points_written >= 10, timeout=30)
        journal = daemon.journal
        assert journal is not None
        now = SystemClock().time_ns()
        # VictoriaMetrics refuses a line over 256 KiB (-influx.maxLineSize) with HTTP 400.
        # Journaled between the simulator's readings, in the same batches.
        journal.append(Reading("dc1", "activity", 1.0, "Bq", Quality.UNCERTAIN, now, 0, reason="x" * 300_000))
        await journal.flush()
        with JournalReader(data_dir) as r:
            (poison_id,) = r.conn.execute("SELECT id FROM readings WHERE length(reason) > 1000").fetchone()
        await wait_until(lambda: fwd.quarantined == 1 and fwd.cursor > poison_id + 20, timeout=60)
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    await drain(data_dir, vm.url)
    with JournalReader(data_dir) as r:
        audits = [a for a in r.audit() if a["action"] == "sink_quarantine"]
        cursor = r.sink_cursors()["central"]["last_id"]
        assert cursor == r.max_reading_id()
    assert len(audits) == 1
    assert audits[0]["subject"] == "central"
    assert audits[0]["detail"]["reading_id"] == poison_id
    assert audits[0]["detail"]["status"] == 400
    assert "too long line" in audits[0]["detail"]["error"]
    assert audits[0]["detail"]["line"].startswith(f"{KIND},")
    assert audits[0]["detail"]["line_length"] > 300_000
    await wait_server_matches(vm, data_dir, exclude_ids={poison_id})


async def fill(journal: Journal, n: int, *, channels: tuple[str, ...] = ("activity", "dose_rate")) -> None:
    """``n`` readings per channel, 2 ms apart, a BAD gap every 97th."""
    start = SystemClock().time_ns() - n * 2_000_000
    for i in range(n):
        for ch in channels:
            bad = i % 97 == 50
            journal.append(
                Reading(
                    "dc1", ch, None if bad else 1000.0 + i / 7, "Bq", Quality.BAD if bad else Quality.GOOD,
                    start + i * 2_000_000, i, reason="disconnected" if bad else None,
                    attrs={"nuclide": "Lu-177"},
                )
            )  # fmt: skip
    await journal.flush()


async def test_restart_in_the_middle_of_a_backlog_resumes_without_loss_or_duplicates(
    data_dir: Path, vm: Victoria
) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    await fill(journal, 10_000)
    await journal.close()
    sink = sink_toml(vm.url, batch_size=100)
    first = Daemon(cell_config(data_dir, None, sink))
    await run_until(first, lambda d: d.services and forwarder(d).cursor >= 3000)
    with JournalReader(data_dir) as r:
        stopped_at = r.sink_cursors()["central"]["last_id"]
    assert 3000 <= stopped_at < 20_000  # stopped with a backlog left
    second = Daemon(cell_config(data_dir, None, sink_toml(vm.url, batch_size=5000)))
    resumed_from: list[int] = []

    def done(d: Daemon) -> bool:
        if not d.services:
            return False
        fwd = forwarder(d)
        if not resumed_from:
            resumed_from.append(fwd.points_written)
        return fwd.pending == 0 and fwd.cursor == 20_000

    await run_until(second, done)
    assert resumed_from == [0]
    assert forwarder(second).points_written == 20_000 - stopped_at  # resumed at the cursor
    await wait_server_matches(vm, data_dir)
