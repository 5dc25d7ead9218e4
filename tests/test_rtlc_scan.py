"""Scans through the daemon: a simulated scanner over a real socket, the driver, the TLC
service, the journal. Finished scans become complete traces with an analysis; aborted ones
(an ``Error:`` line, a lost link, a silent scanner, the daemon stopping) become incomplete
traces whose analysis is never a pass; every line is journaled as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daq.clock import SystemClock
from daq.daemon import Daemon
from daq.errors import DaqError, ProtocolError
from daq.journal import JournalReader, verify_journal
from daq.model import Quality, Reading
from daq.supervisor import State
from daq.tlc import store
from daq.tlc.service import TlcService
from drivers.rtlc_scanner import RtlcScannerConfig, RtlcScannerDriver
from simulators.rtlc_scanner import RtlcScannerSimulator
from tests.helpers import wait_until
from tests.tlc_helpers import scanner_config

FAST = {"time_scale": "0.001", "home_s": "1"}


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task[None]):
        self.daemon = daemon
        self.task = task

    @property
    def tlc(self) -> TlcService:
        svc = self.daemon.services["tlc"]
        assert isinstance(svc, TlcService)
        return svc

    async def stop(self) -> None:
        self.daemon.request_stop()
        await self.task


async def run_daemon(data_dir: Path, url: str, **extra: Any) -> Running:
    daemon = Daemon(scanner_config(data_dir, url, **extra))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: "tlc" in daemon.services)
    await wait_until(lambda: daemon.supervisors[0].state is State.CONNECTED)
    return Running(daemon, task)


@pytest.fixture
async def sim_url() -> AsyncIterator[tuple[RtlcScannerSimulator, str]]:
    sim = RtlcScannerSimulator(seed=3, options={**FAST, "rcp": "97"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    yield sim, listener.url
    await listener.close()


async def test_on_demand_scan_is_journaled_line_by_line_and_recorded(
    data_dir: Path, sim_url: tuple[RtlcScannerSimulator, str]
) -> None:
    sim, url = sim_url
    run = await run_daemon(data_dir, url)
    try:
        trace_id = await run.tlc.start_scan("tlc1", batch="LU-0421", operator="jd", range_mm=100, time_min=5,
                                            actor="jd")  # fmt: skip
        outcome = await run.tlc.wait(trace_id)
    finally:
        await run.stop()
    assert sim.requests == [b"LU-0421,jd,100,5\n"]
    assert outcome["complete"] is True
    assert outcome["passed"] is True
    assert outcome["rcp_percent"] == pytest.approx(97.0, abs=1.0)
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, trace_id)
        analyses = store.analyses(r, trace_id)
        readings = r.readings(limit=100_000)
        audit = r.audit()
        events = r.events()
    assert trace["complete"] is True
    assert trace["instrument"] == "tlc1"
    assert trace["params"]["batch"] == "LU-0421"
    assert trace["params"]["operator"] == "jd"
    assert trace["params"]["range_mm"] == 100
    assert trace["params"]["time_min"] == 5
    assert trace["params"]["method_version"] == "2"
    assert len(trace["counts"]) == 200
    assert trace["positions_mm"][:3] == [0.5, 1.0, 1.5]
    assert trace["positions_mm"][-1] == 100.0
    assert trace["raw"].startswith(b"5; ")
    assert trace["raw"].endswith(b"end\r\n")
    assert trace["ended_ns"] >= trace["started_ns"]
    # Every line was journaled as a reading, tagged with the scan and its position.
    counts = [x for x in readings if x["channel"] == "counts"]
    assert [x["value"] for x in counts] == trace["counts"]
    assert [x["attrs"]["position_mm"] for x in counts] == trace["positions_mm"]
    assert all(x["attrs"]["scan_id"] == trace_id and x["quality"] == Quality.GOOD for x in counts)
    assert counts[0]["raw"] == b"5; %d\r\n" % trace["counts"][0]
    progress = [x["value"] for x in readings if x["channel"] == "scan_progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100.0
    [analysis] = analyses
    assert analysis["analysis_id"] == f"{trace_id}/a1"
    assert analysis["supersedes"] is None
    assert analysis["method"] == "lu-psma-itlc"
    assert analysis["method_version"] == "2"
    res = analysis["results"]
    assert res["complete"] is True
    assert res["passed"] is True
    assert res["limit_percent"] == 95.0
    assert {x["label"] for x in res["rois"]} == {"free", "colloid", "product"}
    for roi in res["rois"]:
        assert set(roi) >= {
            "label",
            "kind",
            "rf_from",
            "rf_to",
            "gross_counts",
            "background_counts",
            "net_counts",
        }
    starts = [a for a in audit if a["action"] == "tlc_scan_start"]
    assert starts[0]["actor"] == "jd"
    assert starts[0]["subject"] == "tlc1"
    assert starts[0]["detail"]["start_line"] == "LU-0421,jd,100,5"
    kinds = [e["kind"] for e in events]
    assert "scan_started" in kinds
    assert "scan_finished" in kinds
    assert verify_journal(data_dir).ok


async def test_scanner_error_aborts_scan_recorded_incomplete_never_a_pass(data_dir: Path) -> None:
    sim = RtlcScannerSimulator(seed=5, faults={"abort": 1.0}, options={**FAST, "rcp": "99"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url)
    try:
        outcome = await run.tlc.scan("tlc1")
    finally:
        await run.stop()
        await listener.close()
    assert outcome["complete"] is False
    assert outcome["passed"] is None
    assert "motor stalled" in outcome["reason"]
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, outcome["trace_id"])
        [analysis] = store.analyses(r, outcome["trace_id"])
        readings = r.readings(limit=100_000)
        events = r.events()
    assert trace["complete"] is False
    assert "motor stalled" in trace["params"]["abort_reason"]
    assert 0 < len(trace["counts"]) < 200
    assert trace["raw"].endswith(b"Error: motor stalled\r\n")
    assert analysis["results"]["complete"] is False
    assert analysis["results"]["passed"] is None
    assert analysis["results"]["passed"] is not True
    bad = [x for x in readings if x["channel"] == "scan_progress" and x["quality"] == Quality.BAD]
    assert bad[0]["raw"] == b"Error: motor stalled\r\n"
    assert bad[0]["reason"] == "device_error"
    assert "scan_aborted" in [e["kind"] for e in events]


async def test_connection_lost_mid_scan_keeps_every_line_and_records_incomplete(data_dir: Path) -> None:
    # Real speed for the first second (home 0.1 s, then 0.1 s per line), then the link drops.
    sim = RtlcScannerSimulator(seed=2, faults={"disconnect_after_s": 1.0},
                               options={"time_scale": "0.0667", "home_s": "1.5"})  # fmt: skip
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url)
    try:
        outcome = await run.tlc.scan("tlc1", range_mm=100, time_min=5)
    finally:
        await run.stop()
        await listener.close()
    assert outcome["complete"] is False
    assert outcome["passed"] is None
    assert "connection lost" in outcome["reason"] or "closed" in outcome["reason"]
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, outcome["trace_id"])
        readings = r.readings(limit=100_000)
    assert trace["complete"] is False
    assert 0 < len(trace["counts"]) < 200
    # Nothing lost: every line of the trace is also a committed reading of the scan.
    counts = [x for x in readings if x["channel"] == "counts" and x["attrs"] and x["attrs"].get("scan_id")]
    assert [x["value"] for x in counts] == trace["counts"]


async def test_silent_scanner_times_out_and_is_recorded_incomplete(data_dir: Path) -> None:
    sim = RtlcScannerSimulator(seed=1, faults={"no_reply": 1.0}, options=FAST)
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url, home_s=0.3, line_margin_s=0.2)
    try:
        outcome = await run.tlc.scan("tlc1", range_mm=100, time_min=1)
    finally:
        await run.stop()
        await listener.close()
    assert outcome["complete"] is False
    assert outcome["passed"] is None
    assert "no line from the scanner" in outcome["reason"]
    assert outcome["points"] == 0


async def test_daemon_stopping_mid_scan_records_the_scan_incomplete(data_dir: Path) -> None:
    sim = RtlcScannerSimulator(seed=1, options={"time_scale": "0.05", "home_s": "0"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url)
    try:
        trace_id = await run.tlc.start_scan("tlc1")
        await wait_until(lambda: len(run.tlc._driver(run.tlc.scanners["tlc1"]).scan.counts) >= 3)  # type: ignore[union-attr]
    finally:
        await run.stop()
        await listener.close()
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, trace_id)
        [analysis] = store.analyses(r, trace_id)
    assert trace["complete"] is False
    assert trace["params"]["abort_reason"] == "daemon stopping before the scan ended"
    assert analysis["results"]["passed"] is None


async def test_periodic_scans_and_busy_scanner(data_dir: Path) -> None:
    sim = RtlcScannerSimulator(seed=4, options={"time_scale": "0.002", "home_s": "0"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url, scan_every_s=1.0)
    try:
        await wait_until(lambda: run.tlc.scans_started >= 1)
        with pytest.raises(DaqError, match="still running"):
            await run.tlc.start_scan("tlc1")
        await wait_until(lambda: len(run.tlc.outcomes) >= 2, timeout=20)
        with pytest.raises(DaqError, match="no radio-TLC scanner"):
            await run.tlc.start_scan("nope")
        with pytest.raises(DaqError, match="no TLC method"):
            await run.tlc.start_scan("tlc1", method="nope")
        status = run.daemon.status()["services"]["tlc"]
    finally:
        await run.stop()
        await listener.close()
    assert status["scans_started"] >= 2
    assert status["scanners"]["tlc1"]["state"] == "connected"
    with JournalReader(data_dir) as r:
        traces = store.traces(r)
    assert len(traces) >= 2
    assert all(t["params"]["actor"] == "schedule" for t in traces)
    assert all(t["complete"] for t in traces[:2])


async def test_lines_without_a_scan_of_ours_are_journaled_flagged(data_dir: Path) -> None:
    """A daemon restarted mid-scan hears lines of a scan it did not start: kept, flagged."""
    sim = RtlcScannerSimulator(seed=1, options={"time_scale": "0", "home_s": "0"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    cfg = RtlcScannerConfig(name="tlc1", kind="rtlc-scanner", port=listener.url)
    driver = RtlcScannerDriver(cfg, SystemClock())
    try:
        await driver.connect()
        await driver.link.write(b"X,someone,10,1\n")  # started by someone else
        readings: list[Reading] = []
        while not any(r.attrs and r.attrs.get("end") for r in readings):
            readings.extend(await driver.read())
    finally:
        await driver.close()
        await listener.close()
    counts = [r for r in readings if r.channel == "counts"]
    assert len(counts) == 20
    assert all(r.quality is Quality.UNCERTAIN and r.reason == "no_active_scan" for r in counts)
    assert all(r.raw for r in counts)


async def test_a_scan_the_daemon_never_recorded_is_recovered_on_the_next_start(data_dir: Path) -> None:
    """Killed mid-scan: the lines are in the journal, the trace is not. The next daemon
    rebuilds the trace from the journaled readings, incomplete, and audits that."""
    sim = RtlcScannerSimulator(seed=1, options={"time_scale": "0.05", "home_s": "0"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url)
    try:
        trace_id = await run.tlc.start_scan("tlc1", batch="LU-9", operator="kd")
        driver = run.tlc._driver(run.tlc.scanners["tlc1"])
        await wait_until(lambda: driver.scan is not None and len(driver.scan.counts) >= 5)
        # Stand-in for the process dying: the task that would record the trace never runs.
        run.tlc._watchers.pop(trace_id).cancel()
    finally:
        await run.stop()
    with JournalReader(data_dir) as r:
        assert store.traces(r) == []
        journaled = [x["value"] for x in r.readings(limit=100_000)
                     if x["channel"] == "counts" and (x["attrs"] or {}).get("scan_id") == trace_id]  # fmt: skip
    assert len(journaled) >= 5
    run = await run_daemon(data_dir, listener.url)
    await run.stop()
    await listener.close()
    with JournalReader(data_dir) as r:
        [trace] = store.traces(r)
        [analysis] = store.analyses(r, trace_id)
        audit = [a for a in r.audit() if a["action"] == "tlc_trace_recovered"]
    assert trace["trace_id"] == trace_id
    assert trace["complete"] is False
    assert "rebuilt from its journaled readings" in trace["params"]["abort_reason"]
    assert trace["counts"] == journaled
    assert trace["params"]["batch"] == "LU-9"
    assert trace["params"]["operator"] == "kd"
    assert analysis["results"]["passed"] is None
    assert audit[0]["subject"] == trace_id
    assert verify_journal(data_dir).ok


async def test_bad_lines_are_journaled_with_their_bytes_and_leave_a_flagged_hole(data_dir: Path) -> None:
    sim = RtlcScannerSimulator(seed=8, faults={"drop": 0.03}, options={**FAST, "rcp": "97"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    run = await run_daemon(data_dir, listener.url)
    try:
        outcome = await run.tlc.scan("tlc1", range_mm=100, time_min=5)
    finally:
        await run.stop()
        await listener.close()
    with JournalReader(data_dir) as r:
        trace = store.find_trace(r, outcome["trace_id"])
        [analysis] = store.analyses(r, outcome["trace_id"])
        readings = r.readings(limit=100_000)
        events = r.events()
    bad = [x for x in readings if x["quality"] == Quality.BAD and x["reason"] == "parse_error"]
    dropped = 200 - len(trace["counts"])
    assert trace["params"]["bad_lines"] == len(bad) > 0
    assert all(x["raw"] for x in bad)
    assert [e["kind"] for e in events].count("parse_error") == len(bad)
    res = analysis["results"]
    assert res["missing_positions"] >= 1
    assert any("missing" in w for w in res["warnings"])
    assert dropped >= res["missing_positions"]


async def test_corrupt_positions_are_refused_not_stored() -> None:
    """Golden lines over a real socket: positions climb by 0.5 mm (docs/instruments.md), so a line off
    the grid, out of order or past the range is corrupt; the driver raises ProtocolError
    with its bytes and keeps the scan going."""
    # 7 is off the grid, 10 repeats, 5000 is past the range, and 5 after 2.0 mm is what a
    # dropped digit makes of "205".
    lines = [b"5; 1\r\n", b"10; 2\r\n", b"7; 3\r\n", b"10; 4\r\n", b"5000; 1\r\n", b"15; 5\r\n",
             b"20; 6\r\n", b"5; 9\r\n", b"end\r\n"]  # fmt: skip
    received: list[bytes] = []

    async def scanner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\n"))
        for line in lines:
            writer.write(line)
        await writer.drain()
        await reader.read()  # until the driver closes
        writer.close()

    server = await asyncio.start_server(scanner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = RtlcScannerDriver(
        RtlcScannerConfig(name="tlc1", kind="rtlc-scanner", port=f"socket://127.0.0.1:{port}", range_mm=100),
        SystemClock(),
    )
    errors: list[ProtocolError] = []
    try:
        await driver.connect()
        scan = await driver.start_scan(batch="B1", operator="op", range_mm=100, time_min=5)
        while not scan.done.is_set():
            try:
                await driver.read()
            except ProtocolError as exc:
                errors.append(exc)
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
    assert received == [b"B1,op,100,5\n"]
    assert scan.complete
    assert scan.positions_mm == [0.5, 1.0, 1.5, 2.0]
    assert scan.counts == [1, 2, 5, 6]
    assert scan.bad_lines == 4
    assert [e.raw for e in errors] == [b"7; 3\r\n", b"10; 4\r\n", b"5000; 1\r\n", b"5; 9\r\n"]
    assert all(e.channel == "counts" for e in errors)
    assert bytes(scan.raw) == b"".join(lines)


async def test_lines_of_a_scan_started_elsewhere_never_become_ours() -> None:
    """The scanner is still finishing a scan it started before ours (a restarted daemon): it
    ignores our start line and streams the rest of its scan. Those lines are refused and the
    foreign 'end' does not complete our scan."""
    lines = [b"1205; 3\r\n", b"1210; 2\r\n", b"end\r\n"]

    async def scanner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n")
        for line in lines:
            writer.write(line)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(scanner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = RtlcScannerDriver(
        RtlcScannerConfig(name="tlc1", kind="rtlc-scanner", port=f"socket://127.0.0.1:{port}", range_mm=150),
        SystemClock(),
    )
    errors: list[ProtocolError] = []
    readings = []
    try:
        await driver.connect()
        scan = await driver.start_scan()
        while not scan.done.is_set():
            try:
                readings.extend(await driver.read())
            except ProtocolError as exc:
                errors.append(exc)
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
    assert scan.complete is False
    assert "busy with a scan not started here" in (scan.abort_reason or "")
    assert scan.counts == []
    assert [e.raw for e in errors] == lines[:2]
    [end] = readings
    assert end.quality is Quality.UNCERTAIN
    assert end.reason == "no_active_scan"
