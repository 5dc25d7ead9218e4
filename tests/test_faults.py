"""Fault matrix, the parts that belong to the core: a full disk and a flood of garbage.

(Instrument outages, server restarts and the sink going down are tested with their drivers
and the forwarder; a clock step with the runs.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daq.daemon import Daemon
from daq.journal import JournalReader, verify_journal
from daq.model import Quality
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import make_config, wait_until


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (the suite runs as root, as CI does)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


async def test_disk_full_raises_alarm_keeps_data_and_resumes(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", "600k") as mnt:
        data_dir = mnt / "data"
        sim = await Vdc404Simulator(options={"interval_s": "0.0005"}).serve("tcp://127.0.0.1:0")
        other = await Vdc404Simulator(seed=2, options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
        cfg = make_config(
            data_dir,
            [
                {"name": "fast", "kind": "veenstra-vdc404", "port": sim.url},
                {"name": "slow", "kind": "veenstra-vdc404", "port": other.url},
            ],
            # A small buffer, so the overflow path runs while the disk is full.
            journal={"max_pending": 2000},
        )
        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        try:
            await wait_until(
                lambda: daemon.journal is not None and daemon.journal.error is not None, timeout=60
            )
            journal = daemon.journal
            assert journal is not None
            assert "full" in (journal.error or "")
            assert daemon.status()["journal"]["error"]
            committed_at_fault = journal.readings_committed
            # Acquisition goes on; what cannot be held is counted, not silently lost.
            await wait_until(lambda: journal.overflowed > 0, timeout=60)
            assert all(s.state.value == "connected" for s in daemon.supervisors)
            grow(mnt, "64m")  # space returns
            await wait_until(lambda: journal.error is None, timeout=30)
            await wait_until(lambda: journal.readings_committed > committed_at_fault + 100, timeout=30)
        finally:
            daemon.request_stop()
            await task
            await sim.close()
            await other.close()
        assert verify_journal(data_dir).ok
        with JournalReader(data_dir) as r:
            alarms = [a for a in r.audit() if a["action"] == "journal_write_failed"]
            overflow = [e for e in r.events(limit=1_000_000) if e["kind"] == "overflow"]
            rows = r.readings(limit=10_000_000)
        assert alarms, "the full disk is in the audit trail"
        assert "full" in alarms[0]["detail"]["error"]
        assert sum(e["detail"]["dropped"] for e in overflow) == journal.overflowed
        for name in ("fast", "slow"):
            seqs = [x["seq"] for x in rows if x["instrument"] == name]
            assert seqs == list(range(1, len(seqs) + 1)), "no duplicated or reordered sequence numbers"
        assert any(x["instrument"] == "slow" and x["quality"] == Quality.GOOD for x in rows)


async def test_garbage_flood_on_one_line_leaves_the_others_good(data_dir: Path) -> None:
    rng = random.Random(7)
    stop = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not stop.is_set():
                # Mostly junk without a terminator (overruns), sometimes short junk lines.
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(100, 6000)))
                writer.write(junk + (b"\n" if rng.random() < 0.5 else b""))
                await writer.drain()
                await asyncio.sleep(0.001)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    good = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    cfg = make_config(
        data_dir,
        [
            {"name": "noisy", "kind": "veenstra-vdc404", "port": f"socket://127.0.0.1:{port}"},
            {"name": "clean", "kind": "veenstra-vdc404", "port": good.url},
        ],
    )
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: len(daemon.supervisors) == 2 and daemon.supervisors[0].parse_errors > 50, timeout=30
        )
        clean = daemon.supervisors[1]
        before = clean.readings
        await asyncio.sleep(1.0)
        assert clean.readings - before >= 10, "the clean instrument kept its rate"
    finally:
        stop.set()
        daemon.request_stop()
        await task
        server.close()
        await server.wait_closed()
        await good.close()
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=10_000_000)
    noisy_bad = [x for x in rows if x["instrument"] == "noisy" and x["reason"] == "parse_error"]
    assert noisy_bad
    assert all(x["raw"] for x in noisy_bad)
    assert max(len(x["raw"]) for x in noisy_bad) <= 4096
    clean_rows = [x for x in rows if x["instrument"] == "clean"]
    assert clean_rows
    assert all(x["quality"] == Quality.GOOD for x in clean_rows)
    assert verify_journal(data_dir).ok
    assert os.path.getsize(data_dir / "journal.sqlite3") > 0
