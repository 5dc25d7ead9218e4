"""Store and forward to a real server: VictoriaMetrics through the InfluxDB v2 write API.

Points are read back through VictoriaMetrics' export API and compared with the journal, per
series: counts, sequence numbers, values and qualities. VictoriaMetrics keeps milliseconds,
so timestamps are compared at millisecond precision (the simulators send far less than one
reading per millisecond per channel).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import math
import random
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import tomli_w
from aiohttp import web

from daq.backoff import Backoff
from daq.clock import ManualClock, SystemClock
from daq.configfile.load import Config, parse_config
from daq.daemon import Daemon
from daq.errors import ConfigError
from daq.forward.config import InfluxSink
from daq.forward.forwarder import InfluxForwarder
from daq.forward.service import ForwardService, sink_token
from daq.forward.writer import retry_after_s
from daq.journal import Journal, JournalReader
from daq.model import Quality, Reading
from daq.secrets import resolve_secret
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import toml_table, wait_until
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
        "precision": "ms",
        **extra,
    }
    return toml_table("sinks", settings)


def cell_config(data_dir: Path, sim_url: str | None, sink: str) -> Config:
    daemon = {"data_dir": str(data_dir), "site": "test site", "cell": "cell,1"}
    text = tomli_w.dumps({"daemon": daemon, "journal": {"commit_window_s": 0.02}})
    if sim_url is not None:
        inst = {"name": "dc1", "kind": KIND, "port": sim_url, "stale_after_s": 2.0,
                "backoff_initial_s": 0.05, "backoff_cap_s": 0.5}  # fmt: skip
        text += "\n" + toml_table("instruments", inst)
    return parse_config(text + "\n" + sink, path="test.toml")


def forwarder(daemon: Daemon) -> InfluxForwarder:
    svc = daemon.services["forward"]
    assert isinstance(svc, ForwardService)
    return svc.forwarders[0]


Series = dict[tuple[str, str, int], dict[int, dict[str, float]]]


def journal_series(
    data_dir: Path,
    *,
    exclude_ids: set[int] = frozenset(),  # type: ignore[assignment]
    through_id: int | None = None,
) -> tuple[Series, int]:
    """Per (instrument, channel): {timestamp ms: {"seq", "quality", "value"?}} and the row count."""
    out: Series = {}
    n = 0
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=10_000_000)
    ranks: dict[tuple[str, str, int], int] = {}
    for row in rows:
        # Readings of one series in one millisecond are told apart by the dup tag (ranked over
        # every row, quarantined ones included, as the forwarder does).
        ms = row["acq_ns"] // 1_000_000
        dup = ranks[(row["instrument"], row["channel"], ms)] = (
            ranks.get((row["instrument"], row["channel"], ms), -1) + 1
        )
        if row["id"] in exclude_ids or (through_id is not None and row["id"] > through_id):
            continue
        n += 1
        # VictoriaMetrics keeps string fields (unit, reason) as 0: their presence is compared.
        sample: dict[str, float] = {"seq": row["seq"], "quality": row["quality"], "unit": 0}
        if row["reason"]:
            sample["reason"] = 0
        if row["value"] is not None and math.isfinite(row["value"]):
            sample["value"] = row["value"]
        out.setdefault((row["instrument"], row["channel"], dup), {})[ms] = sample
    return out, n


def server_series(vm: Victoria) -> tuple[Series, int]:
    """The same shape from the server's export; counts every stored sample of every field."""
    out: Series = {}
    samples = 0
    for s in vm.export():
        name: str = s["metric"]["__name__"]
        field = name.rsplit("_", 1)[1]
        key = (s["metric"]["instrument"], s["metric"]["channel"], int(s["metric"].get("dup", 0)))
        per = out.setdefault(key, {})
        for ts, v in zip(s["timestamps"], s["values"], strict=True):
            samples += 1
            per.setdefault(ts, {})[field] = v
    return out, samples


async def wait_server_matches(
    vm: Victoria,
    data_dir: Path,
    exclude_ids: set[int] = frozenset(),  # type: ignore[assignment]
    through_id: int | None = None,
) -> None:
    """Wait until the server holds exactly the journal (through ``through_id``), then assert it
    per series."""
    expected, _ = journal_series(data_dir, exclude_ids=exclude_ids, through_id=through_id)
    n_fields = sum(len(v) for per in expected.values() for v in per.values())
    got: Series = {}
    samples = -1

    def check() -> bool:
        nonlocal got, samples
        got, samples = server_series(vm)
        return samples >= n_fields

    await wait_until(check, timeout=60, interval=0.1)
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
    # No final drain at stop, so the first daemon stops with a backlog left.
    sink = sink_toml(vm.url, batch_size=100, drain_on_stop_s=0)
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


# -- error handling against a scripted HTTP server (real sockets, real influxdb-client) --------


class ScriptedServer:
    """An HTTP server on 127.0.0.1 answering ``/api/v2/write`` from a script of statuses.

    Each request pops the next ``(status, headers)``; when the script is empty it answers
    ``default``. ``reject`` (a substring) makes any body containing it a 400, as a server
    refusing one bad point would. Bodies are kept (decompressed) with their headers.
    """

    def __init__(
        self,
        script: list[tuple[int, dict[str, str]]] | None = None,
        default: int = 204,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.ssl_context = ssl_context
        self.script = list(script or [])
        self.default = default
        self.reject: str | None = None
        self.requests: list[tuple[dict[str, str], str]] = []
        self.accepted: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _write(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.requests.append((dict(request.headers), body))
        if self.script:
            status, headers = self.script.pop(0)
        elif self.reject is not None and self.reject in body:
            status, headers = 400, {}
        else:
            status, headers = self.default, {}
        if 200 <= status < 300:
            self.accepted.extend(body.split("\n"))
            return web.Response(status=status, headers=headers)
        return web.json_response(
            {"code": "x", "message": f"scripted {status}"}, status=status, headers=headers
        )

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class RecordingClock(SystemClock):
    """The system clock, except that back-off sleeps are recorded and last 10 ms."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        #: While set to an unset event, sleeps wait for it: the test changes the server meanwhile.
        self.gate: asyncio.Event | None = None
        self.sleeping = False

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping = True
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.01)
        finally:
            self.sleeping = False


def make_sink(url: str, **extra: Any) -> InfluxSink:
    settings: dict[str, Any] = {
        "name": "central", "kind": "influxdb", "url": url, "org": "o", "bucket": "b", "batch_size": 1000,
        "max_age_s": 0.05, "backoff_initial_s": 0.5, "backoff_cap_s": 8.0, "precision": "ms", **extra,
    }  # fmt: skip
    return InfluxSink(**settings)


async def open_forwarder(
    data_dir: Path, url: str, clock: SystemClock, n: int = 50, **extra: Any
) -> tuple[Journal, InfluxForwarder]:
    journal = await Journal.open(data_dir, clock=clock)
    await fill(journal, n, channels=("activity",))
    fwd = InfluxForwarder(
        make_sink(url, **extra), journal, site="s", cell="c", kinds={"dc1": KIND}, clock=clock, token="t0ken"
    )
    await fwd.start()
    return journal, fwd


async def close_forwarder(journal: Journal, fwd: InfluxForwarder) -> None:
    await fwd.stop()
    await journal.close()


async def test_5xx_and_429_retry_the_identical_body_and_honour_retry_after(data_dir: Path) -> None:
    script = [(503, {}), (500, {}), (429, {"Retry-After": "7"}), (502, {})]
    async with ScriptedServer(script) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock)
        try:
            await wait_until(lambda: fwd.cursor == 50)
        finally:
            await close_forwarder(journal, fwd)
    assert len(server.requests) == 5
    bodies = {body for _, body in server.requests}
    assert len(bodies) == 1  # every attempt carried exactly the same lines
    headers = server.requests[0][0]
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Authorization"] == "Token t0ken"
    # Back-off: 0.5 doubling (jitter only shortens a wait), Retry-After honoured as given.
    assert clock.sleeps[2] == 7.0
    for got, nominal in zip(
        [clock.sleeps[0], clock.sleeps[1], clock.sleeps[3]], [0.5, 1.0, 4.0], strict=True
    ):
        assert nominal * 0.8 <= got <= nominal
    assert len(server.accepted) == 50
    assert fwd.retries == 4
    assert fwd.last_error is not None
    assert "502" in fwd.last_error


async def test_backoff_is_capped(data_dir: Path) -> None:
    async with ScriptedServer([(503, {})] * 8) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, backoff_cap_s=2.0)
        try:
            await wait_until(lambda: fwd.cursor == 50)
        finally:
            await close_forwarder(journal, fwd)
    assert max(clock.sleeps) <= 2.0  # jitter never lengthens a wait past the cap
    assert clock.sleeps[-1] >= 2.0 * 0.8


class TimedServer(ScriptedServer):
    """A scripted server noting when each request arrives on the forwarder's injected clock."""

    def __init__(self, clock: ManualClock, script: list[tuple[int, dict[str, str]]]):
        super().__init__(script)
        self.clock = clock
        self.arrivals_s: list[float] = []

    async def _write(self, request: web.Request) -> web.Response:
        self.arrivals_s.append(self.clock.monotonic_ns() / 1e9)
        return await super()._write(request)


async def test_retry_waits_follow_the_one_backoff_on_the_injected_clock(data_dir: Path) -> None:
    # Nothing sleeps for real: the ManualClock moves only by the waits of the forwarder, so the
    # time between two requests is exactly the wait before the second.
    script = [(503, {}), (500, {}), (429, {"Retry-After": "7"}), (502, {}), (401, {}), (503, {}), (503, {})]
    clock = ManualClock()
    async with TimedServer(clock, script) as server:
        journal = await Journal.open(data_dir, clock=clock)
        await fill(journal, 50, channels=("activity",))
        fwd = InfluxForwarder(
            make_sink(server.url), journal, site="s", cell="c", kinds={}, clock=clock, rng=random.Random(7)
        )
        await fwd.start()
        try:
            await wait_until(lambda: fwd.cursor == 50)
        finally:
            await close_forwarder(journal, fwd)
    waits = [b - a for a, b in itertools.pairwise(server.arrivals_s)]
    # The same back-off (0.5 s doubling to the 8 s cap, jitter only shortening) with the same
    # random numbers; each retry is one attempt, whatever it waits.
    same = Backoff(0.5, 8.0, rng=random.Random(7))
    jittered = [same.next_delay() for _ in script]
    # (The clock counts whole nanoseconds.)
    assert waits == pytest.approx(
        [
            jittered[0],  # 503: 0.5 s, shortened by up to 20 %
            jittered[1],  # 500: 1 s
            7.0,  # 429: Retry-After exactly, as the server asked
            jittered[3],  # 502: 4 s
            8.0,  # 401: the alarm retries exactly at the cap
            jittered[5],  # 503: capped at 8 s
            jittered[6],
        ],
        abs=1e-8,
    )
    nominal = [0.5, 1.0, 7.0, 4.0, 8.0, 8.0, 8.0]
    assert all(0.8 * n - 1e-8 <= w <= n + 1e-8 for w, n in zip(waits, nominal, strict=True))
    assert fwd.retries == len(script)
    assert len(server.accepted) == 50


class HeldClock(ManualClock):
    """A manual clock whose sleeps end only when the test moves it past their end: a back-off
    wait lasts until something else ends it. ``waiting``: sleeps in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.waiting = 0
        self._moved = asyncio.Event()

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self._moved.set()

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        end = self.monotonic_ns() + int(seconds * 1e9)
        self.waiting += 1
        try:
            while self.monotonic_ns() < end:
                self._moved.clear()
                await self._moved.wait()
        finally:
            self.waiting -= 1


#: Answers after which the forwarder waits before it tries again: an outage's back-off, an
#: alarm's wait at the cap, and a server fault's back-off (one point refused, no witness).
BACKING_OFF = [
    pytest.param(503, 1000, id="retry"),
    pytest.param(401, 1000, id="alarm"),
    pytest.param(400, 1, id="fault"),
]


async def stopped_in_backoff(
    data_dir: Path, answer: int, batch_size: int, back: bool
) -> tuple[InfluxForwarder, ScriptedServer, int]:
    """Run a forwarder until it waits a minute to retry after ``answer``; then stop it (with
    the server answering 204 again if ``back``). Returns the requests made before the stop."""
    clock = HeldClock()
    start_ns = clock.monotonic_ns()
    async with ScriptedServer(default=answer) as server:
        journal = await Journal.open(data_dir, clock=clock)
        await fill(journal, 20, channels=("activity",))
        sink = make_sink(server.url, batch_size=batch_size, backoff_initial_s=60.0, backoff_cap_s=60.0)
        fwd = InfluxForwarder(sink, journal, site="s", cell="c", kinds={}, clock=clock)
        await fwd.start()
        try:
            await wait_until(lambda: clock.waiting == 1)
            before = len(server.requests)
            if back:
                server.default = 204  # the forwarder learns it only by trying
        finally:
            await close_forwarder(journal, fwd)
    assert len(clock.waits) == 1
    assert clock.waits[0] >= 48.0  # a minute's wait (jitter shortens it by up to 20 %) ...
    # ... is over although the clock never moved: the stop ended it.
    assert clock.waiting == 0
    assert clock.monotonic_ns() == start_ns
    return fwd, server, before


@pytest.mark.parametrize(("answer", "batch_size"), BACKING_OFF)
async def test_a_stop_ends_a_backoff_at_once_and_drains_what_the_server_accepts(
    data_dir: Path, answer: int, batch_size: int
) -> None:
    fwd, server, _ = await stopped_in_backoff(data_dir, answer, batch_size, back=True)
    # The final drain sent the backlog to the server, now accepting, at once.
    assert fwd.cursor == 20
    assert fwd.pending == 0
    assert len(set(server.accepted)) == 20
    assert fwd.alarm is None
    with JournalReader(data_dir) as r:
        assert "sink_drain_incomplete" not in [a["action"] for a in r.audit()]


@pytest.mark.parametrize(("answer", "batch_size"), BACKING_OFF)
async def test_a_stop_ends_a_backoff_at_once_and_tries_a_failing_server_once(
    data_dir: Path, answer: int, batch_size: int
) -> None:
    fwd, server, before = await stopped_in_backoff(data_dir, answer, batch_size, back=False)
    # The drain's one attempt failed and ended it (no retries while stopping). The cursor
    # stays, and the backlog waits in the journal, audited.
    assert len(server.requests) == before + 1
    assert fwd.cursor == 0
    assert server.accepted == []
    with JournalReader(data_dir) as r:
        (incomplete,) = [a for a in r.audit() if a["action"] == "sink_drain_incomplete"]
    assert incomplete["detail"]["pending"] == 20


async def test_auth_failure_raises_one_alarm_and_retries_at_the_cap(data_dir: Path) -> None:
    async with ScriptedServer(default=401) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock)
        try:
            await wait_until(lambda: len(clock.sleeps) >= 5)
            assert fwd.status()["state"] == "alarm"
            assert fwd.status()["alarm"].startswith("HTTP 401")
            server.default = 204  # the token is fixed on the server side
            await wait_until(lambda: fwd.cursor == 50)
        finally:
            await close_forwarder(journal, fwd)
    assert all(s == 8.0 for s in clock.sleeps)  # at the cap from the first retry: no storm
    with JournalReader(data_dir) as r:
        actions = [a["action"] for a in r.audit() if a["subject"] == "central"]
    assert actions == ["sink_alarm", "sink_alarm_cleared"]  # one alarm, however many retries
    assert fwd.alarm is None


async def test_missing_bucket_alarms_and_never_quarantines(data_dir: Path) -> None:
    async with ScriptedServer([(404, {})] * 3) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock)
        try:
            await wait_until(lambda: fwd.cursor == 50)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 0
    assert len(server.accepted) == 50
    with JournalReader(data_dir) as r:
        actions = [a["action"] for a in r.audit()]
    assert actions.count("sink_alarm") == 1


async def test_one_rejected_point_is_bisected_out_and_the_rest_written(data_dir: Path) -> None:
    async with ScriptedServer() as server:
        server.reject = "seq=37i"
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=100)
        try:
            await wait_until(lambda: fwd.cursor == 100)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 1
    # The 99 others, one of them twice: the witness sent again to show the server still accepts.
    assert len(server.accepted) == 100
    assert len(set(server.accepted)) == 99
    assert not any("seq=37i" in line for line in server.accepted)
    # log2(100) levels of bisection, then the point again and the witness.
    assert len(server.requests) <= 2 * 7 + 1 + 2
    with JournalReader(data_dir) as r:
        (q,) = [a for a in r.audit() if a["action"] == "sink_quarantine"]
        row = r.readings(after_id=q["detail"]["reading_id"] - 1, limit=1)[0]
    assert row["seq"] == 37
    assert q["detail"]["status"] == 400
    assert q["detail"]["error"] == "scripted 400"


async def test_a_server_rejecting_every_point_blocks_with_an_alarm_instead_of_quarantining(
    data_dir: Path,
) -> None:
    async with ScriptedServer(default=400) as server:
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=20)
        try:
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            assert fwd.quarantined == 0
            assert fwd.cursor == 0  # the backlog waits in the journal
            server.default = 204
            clock.gate.set()
            await wait_until(lambda: fwd.cursor == 20)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 0
    assert len(set(server.accepted)) == 20


async def test_unformattable_reading_is_quarantined_without_being_sent(data_dir: Path) -> None:
    async with ScriptedServer() as server:
        clock = RecordingClock()
        journal = await Journal.open(data_dir, clock=clock)
        now = clock.time_ns()
        journal.append(Reading("dc1", "a", 1.0, "Bq", Quality.GOOD, now, 0))
        journal.append(Reading("dc1", "bad\nchannel", 2.0, "Bq", Quality.GOOD, now, 0))
        journal.append(Reading("dc1", "a", 3.0, "Bq", Quality.GOOD, now + 1000, 0))
        await journal.flush()
        fwd = InfluxForwarder(make_sink(server.url), journal, site="s", cell="c", kinds={}, clock=clock)
        await fwd.start()
        try:
            await wait_until(lambda: fwd.cursor == 3)
        finally:
            await close_forwarder(journal, fwd)
    assert len(server.accepted) == 2
    with JournalReader(data_dir) as r:
        (q,) = [a for a in r.audit() if a["action"] == "sink_quarantine"]
    assert q["detail"]["reading_id"] == 2
    assert "newline" in q["detail"]["error"]


def test_retry_after_parsing() -> None:
    assert retry_after_s("12", 0.0) == 12.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_s("garbage", 0.0) is None
    assert retry_after_s(None, 0.0) is None


async def test_escaping_and_same_timestamp_readings_through_the_real_server(
    data_dir: Path, vm: Victoria
) -> None:
    clock = SystemClock()
    journal = await Journal.open(data_dir, clock=clock)
    now = clock.time_ns()
    odd = ["dose rate", "a,b=c", 'quote"d', "back\\slash", "ünïcödé µSv/h", "=lead"]
    for i, ch in enumerate(odd):
        journal.append(
            Reading("dc1", ch, float(i), "µSv/h", Quality.GOOD, now + i, 0, attrs={"nuclide": "Lu 177,x=y"})
        )
    # Two readings of one series with the very same acquisition time: both must arrive.
    journal.append(Reading("dc1", "same", 1.0, "Bq", Quality.GOOD, now, 0))
    journal.append(Reading("dc1", "same", 2.0, "Bq", Quality.GOOD, now, 0))
    await journal.flush()
    fwd = InfluxForwarder(
        make_sink(vm.url), journal, site="site A", cell="cell,1", kinds={"dc1": KIND}, clock=clock
    )
    await fwd.start()
    try:
        await wait_until(lambda: fwd.cursor == len(odd) + 2)
    finally:
        await close_forwarder(journal, fwd)

    def labels() -> list[dict[str, str]]:
        return [s["metric"] for s in vm.export('{__name__="veenstra-vdc404_value"}')]

    await wait_until(lambda: len(labels()) == len(odd) + 2, timeout=60, interval=0.1)
    got = labels()
    assert {m["channel"] for m in got} == {*odd, "same"}
    assert all(m["site"] == "site A" and m["cell"] == "cell,1" for m in got)
    assert {m["nuclide"] for m in got if m["channel"] != "same"} == {"Lu 177,x=y"}
    same = {
        s["metric"].get("dup", ""): s["values"]
        for s in vm.export('{__name__="veenstra-vdc404_value",channel="same"}')
    }
    assert same == {"": [1.0], "1": [2.0]}


# -- config and secrets -------------------------------------------------------------------------


def test_sink_config_defaults_and_checks(data_dir: Path) -> None:
    cfg = cell_config(
        data_dir, None, sink_toml("https://influx.example:8086", token_credential="influx-token")
    )
    (sink,) = cfg.model.sinks
    assert sink.verify_tls is True
    assert sink.gzip is True
    assert sink.token_credential == "influx-token"
    with pytest.raises(ConfigError) as err:
        cell_config(data_dir, None, sink_toml("http://x", token="s3cret"))
    assert err.value.key_path == "sinks[0].token"
    with pytest.raises(ConfigError) as err:
        cell_config(data_dir, None, sink_toml("http://x") + sink_toml("http://y"))
    assert "duplicate sink name 'central'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        cell_config(data_dir, None, sink_toml("http://x", token_env="A", token_credential="b"))
    assert err.value.key_path == "sinks[0]"
    with pytest.raises(ConfigError) as err:
        cell_config(data_dir, None, sink_toml("ftp://x"))
    assert err.value.key_path == "sinks[0].url"
    with pytest.raises(ConfigError) as err:
        cell_config(data_dir, None, sink_toml("http://x", batchsize=10))
    assert err.value.key_path == "sinks[0].batchsize"


def test_check_config_rejects_an_inline_token(tmp_path: Path) -> None:
    path = tmp_path / "daq.toml"
    path.write_text(cell_config(tmp_path, None, "").text + sink_toml("http://x", token="s3cret"))
    proc = subprocess.run(
        [sys.executable, "-m", "daq", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "sinks[0].token" in proc.stderr
    assert "s3cret" not in proc.stderr


def test_resolve_secret(tmp_path: Path) -> None:
    (tmp_path / "influx-token").write_text("abc123\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "INFLUX_TOKEN": "from-env"}
    assert resolve_secret(None, "influx-token", "token", environ=env) == "abc123"
    assert resolve_secret("INFLUX_TOKEN", None, "token", environ=env) == "from-env"
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        resolve_secret(None, "influx-token", "token", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_secret(None, "other", "token", environ=env)
    with pytest.raises(ConfigError, match="MISSING is not set"):
        resolve_secret("MISSING", None, "token", environ=env)
    with pytest.raises(ConfigError, match="plain file name"):
        resolve_secret(None, "../etc/passwd", "token", environ=env)
    with pytest.raises(ConfigError, match="no secret configured"):
        resolve_secret(None, None, "token", environ=env)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_secret(None, "empty", "token", environ=env)


def test_sink_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAQ_TEST_INFLUX_TOKEN", "tok")
    assert sink_token(make_sink("http://x", token_env="DAQ_TEST_INFLUX_TOKEN"), 0) == "tok"
    assert sink_token(make_sink("http://x"), 0) is None
    monkeypatch.delenv("DAQ_TEST_INFLUX_TOKEN")
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(central\) token"):
        sink_token(make_sink("http://x", token_env="DAQ_TEST_INFLUX_TOKEN"), 0)


async def test_status_shows_backlog_oldest_rate_and_last_error(data_dir: Path) -> None:
    async with ScriptedServer([(204, {})], default=503) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=30, batch_size=10)
        try:
            await wait_until(lambda: fwd.cursor == 10 and fwd.retries >= 1)
            live = fwd.status()
            assert live["pending"] == 20
            assert live["oldest_pending_age_s"] is None or live["oldest_pending_age_s"] > 0
            assert live["points_written"] == 10
            assert live["points_per_s"] > 0
            assert live["last_error"].startswith("HTTP 503")
            assert live["state"] == "retrying"
        finally:
            await close_forwarder(journal, fwd)
    proc = subprocess.run(
        [sys.executable, "-m", "daq", "status", "--data-dir", str(data_dir), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sink = json.loads(proc.stdout)["sinks"]["central"]
    assert sink["forwarded_through_id"] == 10
    assert sink["pending"] == 20
    assert sink["oldest_pending_age_s"] > 0
    assert sink["points_written"] == 10
    assert sink["last_error"].startswith("HTTP 503")
    text = subprocess.run(
        [sys.executable, "-m", "daq", "status", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "sink central: forwarded through id 10, pending 20 (oldest" in text
    assert "last error: HTTP 503" in text


@pytest.mark.slow
async def test_demo_forwards_the_demo_cell_to_a_real_server(tmp_path: Path, vm: Victoria) -> None:
    data_dir = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daq", "demo", "--duration", "6", "--data-dir", str(data_dir), "--api-port", "0",
        "--influx-url", vm.url, "--influx-bucket", "demo", "--influx-precision", "ms", "--every", "1000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()
    assert "hash chains: intact" in out.decode()
    with JournalReader(data_dir) as r:
        cursor = r.sink_cursors()["demo-influx"]["last_id"]
    assert cursor > 20
    await wait_server_matches(vm, data_dir, through_id=cursor)


@pytest.mark.slow
async def test_daemon_killed_mid_backlog_resumes_from_its_cursor(
    data_dir: Path, tmp_path: Path, vm: Victoria
) -> None:
    """SIGKILL, not a clean stop: whatever was sent but not acknowledged is sent again and
    overwrites itself; nothing is lost and nothing stored twice."""
    journal = await Journal.open(data_dir, clock=SystemClock())
    await fill(journal, 10_000)
    await journal.close()
    config = tmp_path / "daq.toml"
    config.write_text(cell_config(data_dir, None, sink_toml(vm.url, batch_size=100)).text)

    def cursor() -> int:
        with JournalReader(data_dir) as r:
            return r.sink_cursors().get("central", {}).get("last_id", 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "daq", "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        await wait_until(lambda: cursor() >= 2000, timeout=60, interval=0.05)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed_at = cursor()
    assert killed_at < 20_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq", "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        await wait_until(lambda: cursor() == 20_000, timeout=90, interval=0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    await wait_server_matches(vm, data_dir)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotcell-daq test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_is_verified_by_default(data_dir: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with ScriptedServer(ssl_context=ctx) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=10)
        try:
            # An unknown certificate: refused, retried, nothing sent.
            await wait_until(lambda: fwd.retries >= 2)
            assert fwd.last_error is not None
            assert "certificate" in fwd.last_error.lower()
            assert server.requests == []
        finally:
            await fwd.stop()
        # The same server with its CA given: delivered.
        fwd = InfluxForwarder(
            make_sink(server.url, ca_file=str(cert)), journal, site="s", cell="c", kinds={}, clock=clock
        )
        await fwd.start()
        try:
            await wait_until(lambda: fwd.cursor == 10)
        finally:
            await close_forwarder(journal, fwd)
    assert len(server.accepted) == 10
