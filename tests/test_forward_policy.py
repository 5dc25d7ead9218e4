"""The delivery policy over real HTTP: quarantine only what is shown to be poison.

A scripted server (real sockets, the real influxdb-client) refuses everything, recovers in the
middle of a bisection, or refuses one point; the forwarder must quarantine exactly the poison
points and treat everything else as a server fault (alarm, back-off, retry).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web

from daq.api.client import format_status
from daq.daemon import Daemon
from daq.forward.policy import (
    Accepted,
    Delivered,
    Rejected,
    Retry,
    ServerFault,
    classify,
    max_refusals,
    settle,
)
from daq.journal import JournalReader
from daq.model import Quality, Reading
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.test_forward import (
    RecordingClock,
    ScriptedServer,
    cell_config,
    close_forwarder,
    drain,
    fill,
    forwarder,
    open_forwarder,
    sink_toml,
    vm,
    wait_server_matches,
)
from tests.victoria import Victoria

__all__ = ["vm"]  # the VictoriaMetrics fixture


def actions(data_dir: Path) -> list[str]:
    with JournalReader(data_dir) as r:
        return [a["action"] for a in r.audit() if a["subject"] == "central"]


async def test_a_server_refusing_everything_never_quarantines_single_point_batches(data_dir: Path) -> None:
    # One point per batch, as a calibrator read once a second gives: no batch shows a
    # point accepted beside a refused one, so nothing is shown to be poison.
    async with ScriptedServer(default=400) as server:
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=6, batch_size=1)
        try:
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            assert fwd.quarantined == 0
            assert fwd.cursor == 0
            assert fwd.status()["state"] == "alarm"
            server.default = 204
            clock.gate.set()
            await wait_until(lambda: fwd.cursor == 6)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 0
    assert len(set(server.accepted)) == 6
    assert "sink_quarantine" not in actions(data_dir)
    assert actions(data_dir) == ["sink_alarm", "sink_alarm_cleared"]


async def test_a_server_refusing_everything_gets_no_request_storm(data_dir: Path) -> None:
    # Bisecting 64 points the server refuses entirely would take 127 requests per attempt.
    async with ScriptedServer(default=400) as server:
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=64)
        try:
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            assert len(server.requests) <= max_refusals(64) + 1 == 19
            assert fwd.quarantined == 0
        finally:
            clock.gate.set()
            await close_forwarder(journal, fwd)
    async with ScriptedServer([(204, {})], default=400) as server:
        # With a witness known, the first refused point settles it: a few requests only.
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir / "second", server.url, clock, n=1, batch_size=64)
        try:
            await wait_until(lambda: fwd.cursor == 1)
            before = len(server.requests)
            await fill(journal, 64, channels=("activity",))
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            # Down to one point (at most log2(64) + 1 requests), that point again, the witness.
            assert len(server.requests) - before <= 7 + 1 + 1
        finally:
            clock.gate.set()
            await close_forwarder(journal, fwd)


async def test_a_server_that_starts_refusing_everything_is_a_fault_not_poison(data_dir: Path) -> None:
    # The server accepted the first points (a witness is known), then refuses everything.
    async with ScriptedServer([(204, {})] * 3, default=400) as server:
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=8, batch_size=1)
        try:
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            assert fwd.cursor == 3
            assert fwd.quarantined == 0
            server.default = 204
            clock.gate.set()
            await wait_until(lambda: fwd.cursor == 8)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 0
    assert len(set(server.accepted)) == 8


async def test_a_server_recovering_during_bisection_gets_no_point_quarantined(data_dir: Path) -> None:
    # The batch, its first half, quarter, ... down to the first point are refused; then the
    # server is well again. The first point was refused only because of the server.
    async with ScriptedServer([(400, {})] * 6) as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=40)
        try:
            await wait_until(lambda: fwd.cursor == 40)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 0
    assert len(set(server.accepted) - {""}) == 40
    assert "sink_quarantine" not in actions(data_dir)


async def test_a_poison_point_in_single_point_batches_is_quarantined(data_dir: Path) -> None:
    async with ScriptedServer() as server:
        server.reject = "seq=4i"
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=8, batch_size=1)
        try:
            await wait_until(lambda: fwd.cursor == 8)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.quarantined == 1
    assert len(set(server.accepted)) == 7
    with JournalReader(data_dir) as r:
        (q,) = [a for a in r.audit() if a["action"] == "sink_quarantine"]
        row = r.readings(after_id=q["detail"]["reading_id"] - 1, limit=1)[0]
    assert row["seq"] == 4
    assert "sink_alarm" not in actions(data_dir)
    with JournalReader(data_dir) as r:
        # The first acknowledgement anchored the chains' heads (later ones within 10 s did not).
        assert [a["cause"] for a in r.table("anchors")] == ["sink:central", "close"]


class SlowServer(ScriptedServer):
    """Answers every write after ``delay_s`` (longer than the sink's timeout)."""

    delay_s: float = 1.0

    async def _write(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_s)
        return await super()._write(request)


async def test_a_timeout_says_what_happened(data_dir: Path) -> None:
    async with SlowServer() as server:
        clock = RecordingClock()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=3, timeout_s=0.2)
        try:
            await wait_until(lambda: fwd.last_error is not None)
            server.delay_s = 0.0
            await wait_until(lambda: fwd.cursor == 3)
        finally:
            await close_forwarder(journal, fwd)
    assert fwd.last_error == "no answer within 0.2 s (timeout)"


@pytest.mark.slow
async def test_status_text_shows_quarantine_count_and_alarm(data_dir: Path) -> None:
    async with ScriptedServer() as server:
        server.reject = "seq=2i"
        clock = RecordingClock()
        clock.gate = asyncio.Event()
        journal, fwd = await open_forwarder(data_dir, server.url, clock, n=5)
        try:
            await wait_until(lambda: fwd.cursor == 5)
            server.reject = None
            server.default = 401
            journal.append(Reading("dc1", "activity", 1.0, "Bq", Quality.GOOD, clock.time_ns(), 0))
            await wait_until(lambda: fwd.alarm is not None and clock.sleeping)
            live = {
                "daemon": {"site": "s", "cell": "c", "pid": 1, "uptime_s": 1.0, "config": "x"},
                "instruments": {},
                "sinks": {"central": {**fwd.status(), "backlog": fwd.pending}},
            }
            text = format_status(live)
            # The stop ends the back-off wait (still held by the gate) at once; its final drain
            # finds the server still refusing and ends (a stop never waits for a retry).
            await fwd.stop()  # writes the status file for ``daq status --data-dir``
        finally:
            clock.gate.set()
            await close_forwarder(journal, fwd)
    assert "quarantined" in text
    sink_line = next(line for line in text.splitlines() if line.startswith("central"))
    assert " 1 " in sink_line  # the quarantine count
    assert "ALARM HTTP 401" in sink_line
    proc = subprocess.run(
        [sys.executable, "-m", "daq", "status", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("sink central"))
    assert "1 quarantined" in line
    assert "ALARM: HTTP 401" in line


def test_outcomes_are_classified_in_one_place() -> None:
    assert classify(204, "") == Accepted()
    assert classify(400, "bad") == Rejected(400, "bad")
    assert classify(413, "big") == Rejected(413, "big")
    assert classify(401, "no") == Retry("HTTP 401: no", 401, alarm=True)
    assert classify(404, "bucket") == Retry("HTTP 404: bucket", 404, alarm=True)
    assert classify(429, "slow", 7.0) == Retry("HTTP 429: slow", 429, after_s=7.0)
    assert classify(503, "down", 7.0) == Retry("HTTP 503: down", 503)
    assert classify(0, "reset") == Retry("reset")


async def test_a_batch_settles_into_one_typed_delivery() -> None:
    # The policy alone, with a server that refuses any request holding a point containing
    # "bad" (so the lines are known without HTTP): what each batch comes to is one value.
    sent: list[Sequence[str]] = []

    async def send(lines: Sequence[str]) -> Accepted | Rejected:
        sent.append(lines)
        return Rejected(400, "bad point") if any("bad" in x for x in lines) else Accepted()

    lines = ["a", "b", "bad", "c"]
    assert await settle(lines, send) == Delivered(3, ((2, Rejected(400, "bad point")),), witness="c")
    assert sent[0] is lines  # the whole batch as itself, so its encoded body can be reused
    # Refused while the known witness is accepted right after: poison, even alone in its batch.
    sent.clear()
    assert await settle(["bad"], send, witness="c") == Delivered(
        0, ((0, Rejected(400, "bad point")),), witness="c"
    )
    assert sent == [["bad"], ["bad"], ["c"]]
    # Alone and no witness known: nothing shows the data to be at fault.
    assert await settle(["bad"], send) == ServerFault(Rejected(400, "bad point"), None)

    async def refuse_all(lines: Sequence[str]) -> Accepted | Rejected:
        return Rejected(400, "down")

    # The witness refused too: the server, not the data.
    assert await settle(["a", "b"], refuse_all, witness="c") == ServerFault(Rejected(400, "down"), "c")
    assert await settle([], refuse_all) == Delivered(0)


async def test_gap_readings_of_a_calibrator_land_in_the_series_they_interrupt(
    data_dir: Path, vm: Victoria
) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "Lu-177"}).serve(
        "tcp://127.0.0.1:0"
    )
    daemon = Daemon(cell_config(data_dir, sim.url, sink_toml(vm.url)))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        fwd = forwarder(daemon)
        await wait_until(lambda: fwd.points_written >= 5, timeout=30)
        await sim.close()  # the calibrator goes away: the daemon journals a gap
        with JournalReader(data_dir) as r:
            await wait_until(
                lambda: any(row["quality"] == Quality.BAD for row in r.readings(limit=100_000)), timeout=30
            )
    finally:
        daemon.request_stop()
        await task
    await drain(data_dir, vm.url)
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=100_000)
    gaps = [row for row in rows if row["quality"] == Quality.BAD and row["channel"] == "activity"]
    assert gaps
    assert all(g["attrs"]["nuclide"] == "Lu-177" for g in gaps)
    await wait_server_matches(vm, data_dir)
    series = vm.export('{__name__=~".*_quality", channel="activity"}')
    # GOOD readings and the gap: one series. (A gap journaled in the very millisecond of the
    # last reading is that series' second point of the millisecond: the same name with dup=1.)
    names = {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "dup")) for s in series}
    assert len(names) == 1
    assert all(s["metric"]["nuclide"] == "Lu-177" for s in series)
    assert float(Quality.BAD) in [v for s in series for v in s["values"]]
