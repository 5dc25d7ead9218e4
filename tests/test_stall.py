"""Stalls are data: a process that stood still leaves explicit records, not device faults."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.comecer_vik202 import Vik202Simulator
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests import proc
from tests.helpers import config_text, wait_until


def _rows(data_dir: Path, sql: str) -> list[Any]:
    try:
        with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:  # not created yet
        return []


@pytest.mark.slow
async def test_sigstop_of_the_daemon_is_recorded_as_missed_polls_and_a_stall(data_dir: Path) -> None:
    polled = await Vik202Simulator(options={"nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    streaming = await Vdc404Simulator(options={"interval_s": "0.1"}).serve("tcp://127.0.0.1:0")
    instruments = [
        {"name": "vik", "kind": "comecer-vik202", "port": polled.url, "period_s": 0.5, "timeout_s": 0.4},
        # Silence of 3 s would be a device fault; the stall below lasts 5 s.
        {"name": "vdc", "kind": "veenstra-vdc404", "port": streaming.url, "stale_after_s": 3.0},
    ]
    cfg = data_dir.parent / "cell.toml"
    cfg.write_text(config_text(data_dir, instruments))
    try:
        p = await asyncio.to_thread(proc.spawn, "run", "--config", str(cfg))
        await wait_until(
            lambda: (
                len(_rows(data_dir, "SELECT 1 FROM readings WHERE instrument = 'vik' AND quality = 0")) >= 3
            ),
            timeout=30,
        )
        p.send_signal(signal.SIGSTOP)
        await asyncio.sleep(5.0)
        stopped_at = time.time_ns()
        p.send_signal(signal.SIGCONT)
        await wait_until(
            lambda: (
                bool(_rows(data_dir, "SELECT 1 FROM readings WHERE reason = 'missed_polls'"))
                and bool(_rows(data_dir, "SELECT 1 FROM events WHERE kind = 'stall'"))
            ),
            timeout=10,
        )
        # Both instruments go on after the stall.
        await asyncio.sleep(1.5)
        code, _, err = await asyncio.to_thread(proc.stop, p, signal.SIGTERM, 20)
    finally:
        await polled.close()
        await streaming.close()
    assert code == 0, err[-2000:]
    gaps = _rows(data_dir, "SELECT instrument, attrs FROM readings WHERE reason = 'missed_polls'")
    assert {g[0] for g in gaps} == {"vik"}
    span = json.loads(gaps[0][1])
    assert span["missed"] >= 8, span  # 5 s at 0.5 s a slot
    assert span["period_s"] == 0.5
    assert span["first_slot_ns"] < span["last_slot_ns"] <= stopped_at + 2_000_000_000
    (stall,) = _rows(data_dir, "SELECT detail FROM events WHERE kind = 'stall'")
    assert json.loads(stall[0])["stalled_s"] >= 4.0
    # The streaming instrument did not time out: its lines sent during the stall were read.
    vdc_faults = _rows(
        data_dir,
        "SELECT reason FROM readings WHERE instrument = 'vdc' AND quality = 2 AND reason != 'shutdown'",
    )
    assert vdc_faults == []
    assert _rows(data_dir, "SELECT 1 FROM events WHERE instrument = 'vdc' AND kind = 'disconnected'") == []
    after = _rows(
        data_dir, f"SELECT 1 FROM readings WHERE instrument = 'vik' AND quality = 0 AND acq_ns > {stopped_at}"
    )
    assert after


@pytest.mark.slow
async def test_sigstop_does_not_stale_an_opcua_subscription(data_dir: Path) -> None:
    from simulators.synth_opcua import SynthOpcUaSimulator, node_id

    sim = SynthOpcUaSimulator(seed=5, options={"update_s": "0.05", "time_scale": "20"})
    listener = await sim.serve("opc.tcp://127.0.0.1:0")
    inst = {
        "name": "synth1", "kind": "opcua", "url": listener.url, "stale_after_s": 3.0,
        "nodes": [{"channel": "reactor_temp", "node_id": node_id("reactor_temp"), "unit": "degC"}],
    }  # fmt: skip
    cfg = data_dir.parent / "cell.toml"
    cfg.write_text(config_text(data_dir, [inst]))
    try:
        p = await asyncio.to_thread(proc.spawn, "run", "--config", str(cfg))
        await wait_until(
            lambda: len(_rows(data_dir, "SELECT 1 FROM readings WHERE quality = 0")) >= 5, timeout=30
        )
        p.send_signal(signal.SIGSTOP)
        await asyncio.sleep(5.0)
        resumed = time.time_ns()
        p.send_signal(signal.SIGCONT)
        await wait_until(
            lambda: (
                bool(_rows(data_dir, f"SELECT 1 FROM readings WHERE quality = 0 AND acq_ns > {resumed}"))
                and bool(_rows(data_dir, "SELECT 1 FROM events WHERE kind = 'stall'"))
            ),
            timeout=10,
        )
        await asyncio.sleep(1.0)
        code, _, err = await asyncio.to_thread(proc.stop, p, signal.SIGTERM, 20)
    finally:
        await listener.close()
    assert code == 0, err[-2000:]
    # The stall is recorded as such; the subscription was not declared stale.
    assert _rows(data_dir, "SELECT 1 FROM events WHERE instrument = 'synth1' AND kind = 'disconnected'") == []
