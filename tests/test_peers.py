"""The calibrator drivers against independent emulators written from docs/instruments.md.

Every test runs a driver over a real TCP socket or PTY against a peer from ``tests/peers``,
which shares no code with ``drivers/`` or ``simulators/``.
"""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daq.clock import SystemClock
from daq.errors import ProtocolError, ReadTimeout
from daq.journal import JournalReader
from daq.model import Quality, Reading, Reason
from drivers.base import SerialDriver
from drivers.biodex_atomlab500 import Atomlab500Driver
from drivers.capintec_crc35r import Crc35rDriver, frame
from drivers.comecer_vik202 import Vik202Config, Vik202Driver
from drivers.line import IMPLAUSIBLE_JUMP
from drivers.veenstra_vdc404 import Vdc404Config, Vdc404Driver
from tests.calibrators import run_daemon
from tests.peers import Atomlab500Peer, Crc35rPeer, Peer, Vdc404Peer, Vik202Peer
from tests.peers.calibrators import crc35r_wrap

PEERS = Path(__file__).parent / "peers"
# The worked example of the protocol facts: R1 (read chamber 1).
R1 = bytes.fromhex("02 43 52 31 69 03")
LISTEN = ["tcp", "pty"]


def test_peers_share_no_code_with_drivers_or_simulators() -> None:
    for path in PEERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                assert root not in {"drivers", "simulators", "daq"}, f"{path.name} imports {name}"


def test_golden_frame_r1() -> None:
    assert crc35r_wrap(b"R1") == R1
    assert frame(b"R1") == R1


@asynccontextmanager
async def connected(
    peer: Peer, driver_cls: type[SerialDriver], listen: str, **keys: Any
) -> AsyncIterator[Any]:
    port = await peer.serve(listen)
    cfg = driver_cls.config_model.model_validate({"name": "dc", "port": port, **keys})
    driver = driver_cls(cfg, SystemClock())  # type: ignore[arg-type]
    try:
        await driver.connect()
        yield driver
    finally:
        await driver.close()
        await peer.close()


# -- CRC-35R: one bad chamber never ends the poll -------------------------------------------


@pytest.mark.parametrize("listen", LISTEN)
async def test_crc35r_every_chamber_gets_one_reading_or_one_bad_record(listen: str) -> None:
    peer = Crc35rPeer(dict.fromkeys(range(1, 7), ("Lu177", "7.403", "5")))
    good = peer.reply_for(1)
    peer.replies = {
        2: good[:-2] + bytes([0x21 + (good[-2] - 0x21 + 1) % 0x7F, 0x03]),  # bad checksum
        3: crc35r_wrap(b"DR3,Lu177 , 7.4035", length=0x41 + 5),  # wrong length byte
        4: crc35r_wrap(b"DR4,Lu177 , 7.4039"),  # unknown unit code
        5: crc35r_wrap(b"DR6,Lu177 , 7.4035"),  # the reply of another chamber
    }
    async with connected(
        peer, Crc35rDriver, listen, kind="capintec-crc35r", chambers=[1, 2, 3, 4, 5, 6]
    ) as d:
        readings = await d.read()
    assert peer.requests == [frame(b"R%d" % n) for n in range(1, 7)]
    assert peer.requests[0] == R1
    assert [r.channel for r in readings] == [f"chamber{n}" for n in range(1, 7)]
    by = {r.channel: r for r in readings}
    for n in (1, 6):
        assert by[f"chamber{n}"].quality is Quality.GOOD
        assert by[f"chamber{n}"].value == 7403000000.0
    reasons = {2: "checksum", 3: "length byte", 4: "unit code", 5: "chamber 6"}
    for n, why in reasons.items():
        r = by[f"chamber{n}"]
        assert (r.quality, r.reason, r.value) == (Quality.BAD, Reason.PARSE_ERROR, None)
        assert r.raw == peer.replies[n]
        assert r.attrs is not None
        assert why in r.attrs["error"]


async def test_crc35r_a_silent_chamber_times_out_alone() -> None:
    peer = Crc35rPeer({1: ("Lu177", "7.403", "5"), 3: ("F18", "1.234", "4")})  # chamber 2 never answers
    async with connected(
        peer, Crc35rDriver, "tcp", kind="capintec-crc35r", chambers=[1, 2, 3], timeout_s=0.6, period_s=1.0
    ) as d:
        one, two, three = await d.read()
    assert (one.quality, one.value) == (Quality.GOOD, 7403000000.0)
    assert (two.quality, two.reason, two.value) == (Quality.BAD, Reason.TIMEOUT, None)
    assert (three.quality, three.value) == (Quality.GOOD, 1234000.0)
    assert peer.requests == [frame(b"R1"), frame(b"R2"), frame(b"R3")]


async def test_crc35r_no_chamber_answering_is_a_timed_out_poll() -> None:
    peer = Crc35rPeer({})
    async with connected(
        peer, Crc35rDriver, "tcp", kind="capintec-crc35r", chambers=[1, 2], timeout_s=0.2
    ) as d:
        with pytest.raises(ReadTimeout):
            await d.read()


async def test_crc35r_bad_record_stays_in_the_chamber_series() -> None:
    peer = Crc35rPeer({1: ("Lu177", "7.403", "5"), 2: ("F18", "1.234", "4")})
    async with connected(peer, Crc35rDriver, "tcp", kind="capintec-crc35r", chambers=[1, 2]) as d:
        await d.read()
        peer.replies = {2: crc35r_wrap(b"DR2,F18   , 1.2349")}
        one, two = await d.read()
    assert one.quality is Quality.GOOD
    assert two.quality is Quality.BAD
    assert two.attrs is not None
    assert two.attrs["nuclide"] == "F-18"


# -- exact becquerels, the figure as displayed, the nuclide table's spelling ------------------


@pytest.mark.parametrize("listen", LISTEN)
async def test_crc35r_exact_becquerels_and_figure_as_displayed(listen: str) -> None:
    peer = Crc35rPeer({1: ("Tc99m", "16.56", "4"), 2: ("123&2", "32.01", "5"), 3: ("Lu177", "7.400", "5")})
    async with connected(peer, Crc35rDriver, listen, kind="capintec-crc35r", chambers=[1, 2, 3]) as d:
        one, two, three = await d.read()
    assert one.value == 16560000.0
    assert two.value == 32010000000.0
    assert three.value == 7400000000.0
    assert one.attrs is not None
    assert two.attrs is not None
    assert three.attrs is not None
    assert (one.attrs["nuclide"], one.attrs["nuclide_shown"], one.attrs["cal"]) == (
        "Tc-99m",
        "Tc99m",
        "Tc99m",
    )
    assert (two.attrs["nuclide"], two.attrs["cal"]) == (None, "123&2")
    assert three.attrs["reported_text"] == "7.400"
    assert three.attrs["reported_unit"] == "GBq"


@pytest.mark.parametrize("listen", LISTEN)
async def test_atomlab_exact_becquerels_and_what_the_instrument_showed(listen: str) -> None:
    peer = Atomlab500Peer("Tc99m", "9.322", "mCi")
    async with connected(peer, Atomlab500Driver, listen, kind="biodex-atomlab500") as d:
        [r] = await d.read()
    assert r.value == 344914000.0
    assert r.attrs is not None
    assert r.attrs["nuclide"] == "Tc-99m"
    assert r.attrs["cal"] == r.attrs["nuclide_shown"] == "Tc99m"
    assert r.attrs["reported_text"] == "9.322"


async def _vdc_readings(lines: list[tuple[str, str, str]], listen: str = "tcp", **keys: Any) -> list[Any]:
    """Push ``lines`` from a VDC-404 peer; each read returns its reading or the ProtocolError."""
    peer = Vdc404Peer()
    out: list[Any] = []
    async with connected(peer, Vdc404Driver, listen, kind="veenstra-vdc404", stale_after_s=2.0, **keys) as d:
        for line in lines:
            await peer.line(*line)
            try:
                [r] = await d.read()
            except ProtocolError as exc:
                out.append(exc)
            else:
                out.append(r)
    return out


@pytest.mark.parametrize("listen", LISTEN)
async def test_vdc404_nuclide_in_the_table_spelling_and_exact_value(listen: str) -> None:
    [r] = await _vdc_readings([("Tc99m", "32.01", "GBq")], listen)
    assert r.value == 32010000000.0
    assert (r.attrs["nuclide"], r.attrs["nuclide_shown"]) == ("Tc-99m", "Tc99m")


# -- plausibility ---------------------------------------------------------------------------


async def test_vdc404_dropped_byte_is_a_parse_error_with_raw() -> None:
    good, bad = await _vdc_readings([("Lu-177", "7.404", "GBq"), ("Lu-177", ".403", "GBq")])
    assert isinstance(good, Reading)
    assert good.quality is Quality.GOOD
    assert isinstance(bad, ProtocolError)
    assert bad.raw == b"Lu-177: .403 GBq\r\n"
    assert bad.channel == "activity"


async def test_implausible_jump_is_uncertain_and_keeps_the_value() -> None:
    a, b, c = await _vdc_readings(
        [("Lu-177", "7.404", "GBq"), ("Lu-177", "743", "MBq"), ("Lu-177", "750", "MBq")]
    )
    assert a.quality is Quality.GOOD
    assert (b.quality, b.reason, b.value) == (Quality.UNCERTAIN, IMPLAUSIBLE_JUMP, 743000000.0)
    assert b.attrs["predicted_bq"] == pytest.approx(7.404e9, rel=1e-3)
    assert c.quality is Quality.GOOD  # close to its predecessor


async def test_jump_factor_is_configurable() -> None:
    lines = [("F-18", "1.000", "GBq"), ("F-18", "150", "MBq")]
    _, flagged = await _vdc_readings(lines)  # default factor 5
    _, tolerated = await _vdc_readings(lines, jump_factor=10.0)
    assert flagged.reason == IMPLAUSIBLE_JUMP
    assert tolerated.quality is Quality.GOOD


async def test_no_jump_across_a_nuclide_change_or_below_the_floor() -> None:
    readings = await _vdc_readings(
        [
            ("F-18", "1.000", "GBq"),
            ("Lu-177", "10.00", "MBq"),
            ("Lu-177", "1.0", "kBq"),
            ("Lu-177", "50", "kBq"),
        ]
    )
    assert readings[1].quality is Quality.GOOD  # another nuclide: another vial
    assert readings[2].reason == IMPLAUSIBLE_JUMP  # the vial left the chamber
    assert readings[3].quality is Quality.GOOD  # background against background: not compared


@pytest.mark.parametrize("factor", [1.0, 1.4, 1001.0, float("nan")])
def test_jump_factor_bounds(factor: float) -> None:
    with pytest.raises(ValidationError, match="jump_factor"):
        Vdc404Config.model_validate(
            {"name": "v", "kind": "veenstra-vdc404", "port": "x", "jump_factor": factor}
        )
    assert (
        Vdc404Config.model_validate({"name": "v", "kind": "veenstra-vdc404", "port": "x"}).jump_factor == 5.0
    )


# -- VIK-202: device information is best effort ---------------------------------------------


@pytest.mark.parametrize(
    "replies",
    [
        {"!GQ": "1.25E-11 A", "!V": "297 V"},
        {"!GQ": "?", "!V": "?", "!GV": "?"},
        {"!GQ": "1.25E-11\r>OK", "!V": "297>OK"},
        {"!GV": None},
        {"!GQ": None, "!V": None},
        {"!GF": "762\r>OK", "!R": "16560000\r>OK"},
        {"!GF": ">OK\r762", "!R": ">OK\r16560000"},
    ],
    ids=[
        "unit-suffix",
        "question-mark",
        "trailing-ok",
        "no-reply-gv",
        "no-reply-gq-v",
        "ok-after-values",
        "ok-before-values",
    ],
)
@pytest.mark.parametrize("listen", LISTEN)
async def test_vik202_connects_and_reads_whatever_device_info_says(
    replies: dict[str, Any], listen: str
) -> None:
    peer = Vik202Peer(activity_bq="16560000", factor="762")
    peer.replies = dict(replies)
    port = await peer.serve(listen)
    cfg = Vik202Config(name="vik", kind="comecer-vik202", port=port, timeout_s=0.2, period_s=1.0)
    driver = Vik202Driver(cfg, SystemClock())
    try:
        info = await driver.connect()
        [r] = await driver.read()
    finally:
        await driver.close()
        await peer.close()
    assert (r.quality, r.value) == (Quality.GOOD, 16560000.0)
    assert r.attrs is not None
    assert (r.attrs["nuclide"], r.attrs["cal"]) == ("F-18", "762")
    if replies.get("!GQ") == "1.25E-11 A":
        assert info.extra["chamber_current_a"] == 1.25e-11
        assert info.extra["hv_battery_v"] == 297.0
    if "trailing" in str(replies.get("!V")) or replies.get("!V") == "297>OK":
        assert info.extra["hv_battery_v"] == 297.0
    if None in replies.values() or "?" in replies.values():
        assert info.extra["unanswered"]


async def test_vik202_in_a_daemon_with_silent_device_info(data_dir: Path) -> None:
    peer = Vik202Peer(activity_bq="740000000")
    peer.replies = {"!GV": None, "!GQ": "1.25E-11 A", "!V": "297 V"}
    port = await peer.serve("tcp")
    inst = {"name": "vik", "kind": "comecer-vik202", "port": port, "period_s": 0.3, "timeout_s": 0.2}
    try:
        daemon = await run_daemon(
            data_dir,
            [inst],
            lambda d: d.supervisors[0].readings >= 2 and bool(d.supervisors[0].last_values),
        )
    finally:
        await peer.close()
    sup = daemon.supervisors[0]
    assert sup.connects >= 1
    assert sup.last_values["activity"].quality is Quality.GOOD
    assert sup.last_values["activity"].value == 740000000.0
    assert sup.device_info is not None
    # After the first silent query the rest are not asked: connecting stays short.
    assert sup.device_info.extra["unanswered"] == "!GV,!GQ,!V,!GF"


async def test_crc35r_in_a_daemon_one_record_per_chamber_per_poll(data_dir: Path) -> None:
    peer = Crc35rPeer(dict.fromkeys((1, 2, 3), ("Lu177", "7.403", "5")))
    good = peer.reply_for(2)
    peer.replies = {
        2: good[:-2] + bytes([0x21 + (good[-2] - 0x21 + 1) % 0x7F, 0x03])
    }  # always a bad checksum
    port = await peer.serve("tcp")
    inst = {"name": "crc", "kind": "capintec-crc35r", "port": port, "chambers": [1, 2, 3], "period_s": 0.2,
            "timeout_s": 0.15}  # fmt: skip
    try:
        daemon = await run_daemon(data_dir, [inst], lambda d: d.supervisors[0].readings >= 15)
    finally:
        await peer.close()
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["instrument"] == "crc"]
        events = [e for e in r.events() if e["instrument"] == "crc" and e["kind"] == "parse_error"]
    by: dict[str, list[dict[str, Any]]] = {}
    for x in rows:
        by.setdefault(x["channel"], []).append(x)
    polls = len(by["chamber1"])
    assert polls >= 5
    assert all(len(by[c]) == polls for c in ("chamber2", "chamber3"))  # one record each, every poll
    assert all(x["quality"] == Quality.GOOD for c in ("chamber1", "chamber3") for x in by[c])
    assert all(x["quality"] == Quality.BAD and x["raw"] == peer.replies[2] for x in by["chamber2"])
    assert len(events) == polls
    assert all(e["raw"] == peer.replies[2] for e in events)
    assert daemon.supervisors[0].parse_errors == polls
