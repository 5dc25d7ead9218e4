"""Writes to calibrators: refused unless ``allow_writes``, every attempt audited with who/what/why,
and a refused write puts no byte on the wire (the simulators' request logs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daq.clock import SystemClock
from daq.daemon import Daemon
from daq.errors import WriteRefused
from daq.journal import JournalReader
from drivers.capintec_crc35r import Crc35rConfig, Crc35rDriver
from simulators.base import Simulator
from tests.calibrators import PAIR
from tests.helpers import make_config, wait_until


class Cell:
    def __init__(self, daemon: Daemon, sims: dict[str, Simulator]):
        self.daemon = daemon
        self.sims = sims


@pytest.fixture
async def cell(data_dir: Path) -> AsyncIterator[Cell]:
    setup = {  # name: (pair, allow_writes)
        "crc-locked": ("crc35r", False),
        "crc-open": ("crc35r", True),
        "vik-open": ("vik202", True),
        "atomlab-open": ("atomlab500", True),
    }
    sims: dict[str, Simulator] = {}
    listeners = []
    instruments: list[dict[str, Any]] = []
    for name, (pair_id, allow) in setup.items():
        pair = PAIR[pair_id]
        sims[name] = pair.simulator()
        listeners.append(await sims[name].serve("tcp://127.0.0.1:0"))
        instruments.append(pair.instrument(name, listeners[-1].url, allow_writes=allow))
    daemon = Daemon(make_config(data_dir, instruments))
    task = asyncio.create_task(daemon.run())
    await wait_until(
        lambda: len(daemon.supervisors) == 4 and all(s.readings >= 2 for s in daemon.supervisors)
    )
    yield Cell(daemon, sims)
    daemon.request_stop()
    await task
    for lst in listeners:
        await lst.close()


def audit(data_dir: Path) -> list[dict[str, Any]]:
    with JournalReader(data_dir) as r:
        return [a for a in r.audit() if a["action"].startswith("instrument_write")]


async def test_refused_write_is_audited_and_sends_nothing(cell: Cell, data_dir: Path) -> None:
    with pytest.raises(WriteRefused):
        await cell.daemon.instrument_write(
            "crc-locked", "set_nuclide", "Ac225", actor="alice", reason="batch B-7"
        )
    [entry] = audit(data_dir)
    assert entry["action"] == "instrument_write_refused"
    assert entry["actor"] == "alice"
    assert entry["subject"] == "crc-locked"
    assert entry["detail"] == {"command": "set_nuclide", "value": "Ac225", "reason": "batch B-7"}
    sent = cell.sims["crc-locked"].requests
    assert sent
    assert all(frame[2:3] == b"R" for frame in sent)  # polls only, never an I command


async def test_allowed_crc35r_set_nuclide_is_audited_and_takes_effect(cell: Cell, data_dir: Path) -> None:
    answer = await cell.daemon.instrument_write(
        "crc-open", "set_nuclide", "Ac225", actor="bob", reason="Ac-225 assay"
    )
    assert answer == "OK"
    [entry] = audit(data_dir)
    assert entry["action"] == "instrument_write"
    assert entry["actor"] == "bob"
    assert entry["detail"]["answer"] == "OK"
    assert entry["detail"]["reason"] == "Ac-225 assay"
    sup = cell.daemon.supervisor("crc-open")
    seen = sup.readings
    await wait_until(lambda: sup.readings >= seen + 4)
    assert sup.last_values["chamber1"].attrs["nuclide"] == "Ac-225"  # type: ignore[index]


async def test_allowed_vik202_commands(cell: Cell, data_dir: Path) -> None:
    d = cell.daemon
    assert (
        await d.instrument_write("vik-open", "set_factor", "236", actor="carol", reason="Tc-99m kit") == ">OK"
    )
    assert cell.sims["vik-open"].factor == "236"  # type: ignore[attr-defined]
    zero = await d.instrument_write("vik-open", "zero", actor="carol", reason="daily zero")
    assert zero.startswith(">OK")
    assert await d.instrument_write("vik-open", "background", "on", actor="carol", reason="bkg") == ">OK"
    assert cell.sims["vik-open"].background is True  # type: ignore[attr-defined]
    sup = d.supervisor("vik-open")
    seen = sup.readings
    await wait_until(lambda: sup.readings >= seen + 3)
    attrs = sup.last_values["activity"].attrs
    assert attrs is not None
    assert (attrs["cal"], attrs["nuclide"]) == ("236", "Tc-99m")
    entries = audit(data_dir)
    assert [e["action"] for e in entries] == ["instrument_write"] * 3
    assert [e["detail"]["command"] for e in entries] == ["set_factor", "zero", "background"]
    assert all(e["actor"] == "carol" for e in entries)


async def test_allowed_atomlab_iso_and_failures_are_audited(cell: Cell, data_dir: Path) -> None:
    d = cell.daemon
    assert (
        await d.instrument_write("atomlab-open", "set_nuclide", "Ga68", actor="dave", reason="switch") == "OK"
    )
    assert b"ISO Ga68" in cell.sims["atomlab-open"].requests
    with pytest.raises(WriteRefused):
        await d.instrument_write("atomlab-open", "format_disk", actor="mallory", reason="?")
    entries = audit(data_dir)
    assert [e["action"] for e in entries] == ["instrument_write", "instrument_write_failed"]
    assert entries[1]["actor"] == "mallory"
    assert "unknown command" in entries[1]["detail"]["error"]


async def test_driver_refuses_on_its_own_too() -> None:
    sim = PAIR["crc35r"].simulator()
    listener = await sim.serve("tcp://127.0.0.1:0")
    driver = Crc35rDriver(Crc35rConfig(name="c", kind="capintec-crc35r", port=listener.url), SystemClock())
    try:
        await driver.connect()
        with pytest.raises(WriteRefused, match="writes are disabled"):
            await driver.write("set_nuclide", "F18")
        await asyncio.sleep(0.05)
    finally:
        await driver.close()
        await listener.close()
    assert sim.requests == []
