"""The contract every serial driver keeps with its simulator, over a real socket and a real PTY.

For each pair: connect and close are idempotent; a simulator restart is recovered from
without help; the outage is written as BAD records; sequence numbers and acquisition
times only go forward. The PTY is reached through a symlink, as ``/dev/serial/by-id/...`` is,
so a restarted simulator (a new PTY) is found again under the same name; a stopped one's name
is gone, as an unplugged adapter's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path

import pytest

from daq.clock import SystemClock
from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality, Reading
from drivers import REGISTRY
from simulators.base import Listener
from tests.calibrators import PAIRS, Pair
from tests.helpers import free_port, make_config, wait_until

SERIAL_KINDS = {"veenstra-vdc404", "capintec-crc35r", "biodex-atomlab500", "comecer-vik202", "line"}


def test_every_serial_calibrator_kind_has_a_pair() -> None:
    assert {p.kind for p in PAIRS} == SERIAL_KINDS
    assert set(REGISTRY) >= SERIAL_KINDS


class Endpoint:
    """A simulator that can be stopped and started again at the same address."""

    def __init__(self, pair: Pair, transport: str, tmp: Path):
        self.sim = pair.simulator()
        self.transport = transport
        self.listener: Listener | None = None
        if transport == "tcp":
            port = free_port()
            self.listen = f"tcp://127.0.0.1:{port}"
            self.url = f"socket://127.0.0.1:{port}"
        else:
            self.listen = "pty"
            self.url = str(tmp / "by-id" / "usb-calibrator-if00")
            (tmp / "by-id").mkdir()

    async def start(self) -> None:
        self.listener = await self.sim.serve(self.listen)
        if self.transport == "pty":
            tmp_link = self.url + ".new"
            os.symlink(self.listener.url, tmp_link)
            os.replace(tmp_link, self.url)

    async def stop(self) -> None:
        if self.transport == "pty":
            # Unplugged, the device's by-id name goes too. Left pointing at the closed PTY, the
            # driver's reconnects would open whatever PTY the kernel gives that number next:
            # another test's, on another worker, whose lines this driver would then take.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.url)
        if self.listener is not None:
            await self.listener.close()
            self.listener = None


PARAMS = [pytest.param(p, t, id=f"{p.id}-{t}") for p in PAIRS for t in ("tcp", "pty")]


@pytest.mark.parametrize(("pair", "transport"), PARAMS)
async def test_connect_and_close_are_idempotent(pair: Pair, transport: str, tmp_path: Path) -> None:
    ep = Endpoint(pair, transport, tmp_path)
    await ep.start()
    cls = REGISTRY[pair.kind]
    driver = cls(cls.config_model.model_validate(pair.instrument("dc", ep.url)), SystemClock())
    try:
        first = await driver.connect()
        again = await driver.connect()
        assert first.model == again.model
        readings = await driver.read()
        await driver.close()
        await driver.close()
        await driver.connect()
        readings += await driver.read()
    finally:
        await driver.close()
        await ep.stop()
    assert readings
    assert all(r.quality is Quality.GOOD and r.unit == "Bq" for r in readings)
    assert {r.channel for r in readings} <= {ch for ch, _ in driver.channels()}


@pytest.mark.parametrize(("pair", "transport"), PARAMS)
async def test_outage_is_recorded_and_recovered(
    pair: Pair, transport: str, tmp_path: Path, data_dir: Path
) -> None:
    ep = Endpoint(pair, transport, tmp_path)
    await ep.start()
    seen: Counter[Quality] = Counter()

    def count(r: Reading) -> Reading:
        seen[r.quality] += 1
        return r

    daemon = Daemon(make_config(data_dir, [pair.instrument("dc", ep.url)]))
    daemon.pipeline.insert("count", count)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: seen[Quality.GOOD] >= 3, timeout=20)
        await ep.stop()  # the instrument is switched off
        await wait_until(lambda: seen[Quality.BAD] >= 1, timeout=20)
        await asyncio.sleep(0.5)
        good_before = seen[Quality.GOOD]
        await ep.start()  # ... and on again
        await wait_until(lambda: seen[Quality.GOOD] >= good_before + 3, timeout=20)
    finally:
        daemon.request_stop()
        await task
        await ep.stop()
    sup = daemon.supervisors[0]
    assert sup.connects >= 2
    with JournalReader(data_dir) as r:
        rows = r.readings()
        kinds = [e["kind"] for e in r.events()]
    assert kinds.count("connected") >= 2
    bad = [x for x in rows if x["quality"] == Quality.BAD]
    assert bad
    assert all(x["value"] is None and x["reason"] for x in bad)
    assert {x["reason"] for x in bad} <= {"disconnected", "connect_failed", "timeout", "parse_error"}
    # The gap lies between GOOD readings.
    first_bad = rows.index(bad[0])
    assert any(x["quality"] == Quality.GOOD for x in rows[:first_bad])
    assert any(x["quality"] == Quality.GOOD for x in rows[first_bad:])
    for channel in {x["channel"] for x in rows}:
        mine = [x for x in rows if x["channel"] == channel]
        seqs = [x["seq"] for x in mine]
        assert seqs == sorted(set(seqs)), channel
    seqs = [x["seq"] for x in rows]
    assert seqs == sorted(set(seqs))
    acq = [x["acq_ns"] for x in rows]
    assert acq == sorted(acq)
    mono = [x["mono_ns"] for x in rows]
    assert mono == sorted(mono)


def test_demo_cell_has_at_least_two_calibrator_models() -> None:
    from daq.cli.demo import SIMULATION, _default_config
    from daq.configfile.load import load_config

    cfg = load_config(_default_config())
    kinds = {i.kind for i in cfg.instruments} & SERIAL_KINDS
    assert len(kinds) >= 3
    assert {"capintec-crc35r", "comecer-vik202"} <= kinds
    assert all(i.name in SIMULATION for i in cfg.instruments)


def test_line_settings_default_per_model_and_override_in_config() -> None:
    expected = {"veenstra-vdc404": 9600, "capintec-crc35r": 4800, "biodex-atomlab500": 19200,
                "comecer-vik202": 9600, "line": 9600}  # fmt: skip
    for pair in PAIRS:
        cls = REGISTRY[pair.kind]
        plain = cls(cls.config_model.model_validate(pair.instrument("d", "/dev/ttyUSB0")), SystemClock())
        assert plain.line_settings()["baudrate"] == expected[pair.kind], pair.id  # type: ignore[attr-defined]
        over = pair.instrument("d", "rfc2217://127.0.0.1:4000", serial={"baudrate": 1200, "parity": "E"})
        driver = cls(cls.config_model.model_validate(over), SystemClock())
        settings = driver.line_settings()  # type: ignore[attr-defined]
        assert (settings["baudrate"], settings["parity"], settings["bytesize"]) == (1200, "E", 8)
