"""Comecer VIK-202: the number replies (golden, fuzzing), device info and the factor table.

Protocol facts (docs/instruments.md, VIK-202): 9600 8N1; commands end with CR; ``>OK``
acknowledgements; ``!R`` answers the activity in Bq as a decimal number; ``!F<factor>``
sets and ``!GF`` reads the calibration factor (762 = F-18, 236 = Tc-99m, 447 = I-131);
``!GQ`` chamber current (A), ``!V`` HV battery, ``!GV`` software version.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import SystemClock
from daq.errors import ProtocolError
from drivers.comecer_vik202 import (
    FACTOR_NUCLIDES,
    Vik202Config,
    Vik202Driver,
    factor_text,
    info_value,
    parse_number,
    reply_figure,
)
from simulators.comecer_vik202 import Vik202Simulator

GOLDEN = [
    (b"740000000\r", 740000000.0),
    (b"1.5E+10\r", 1.5e10),
    (b"  12345.6\r", 12345.6),
    (b"762\r", 762.0),
    (b"1.234E-09\r\n", 1.234e-9),
]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN)
def test_golden_numbers(raw: bytes, expected: float) -> None:
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", [b">OK\r", b">ERR\r", b"\r", b"abc\r", b"nan\r", b"inf\r", b"\xff\r"])
def test_non_numbers_raise_protocol_error_with_raw(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_number(raw)
    assert info.value.raw == raw


@pytest.mark.fuzz
@given(st.binary(max_size=40))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        value = parse_number(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert value == value
        assert abs(value) != float("inf")


def test_documented_factors() -> None:
    assert FACTOR_NUCLIDES == {"762": "F-18", "236": "Tc-99m", "447": "I-131"}
    assert factor_text(762.0) == "762"
    assert factor_text(76.5) == "76.5"


async def test_device_info_and_reading_over_a_pty() -> None:
    sim = Vik202Simulator(options={"nuclide": "Tc-99m", "activity_mbq": "800"})
    listener = await sim.serve("pty")
    cfg = Vik202Config(
        name="vik", kind="comecer-vik202", port=listener.url, factor_nuclides={"999": "Lu-177"}
    )
    driver = Vik202Driver(cfg, SystemClock())
    try:
        info = await driver.connect()
        [reading] = await driver.read()
    finally:
        await driver.close()
        await listener.close()
    assert [r.strip() for r in sim.requests[:4]] == [b"!GV", b"!GQ", b"!V", b"!GF"]
    assert sim.requests[-2:] == [b"!GF\r", b"!R\r"]
    assert info.model == "Comecer VIK-202"
    assert info.firmware == "VIK-202 2.10 (simulated)"
    assert info.extra["cal_factor"] == "236"
    assert info.extra["chamber_current_a"] > 0
    assert info.extra["hv_battery_v"] == 512.0
    assert reading.unit == "Bq"
    assert reading.attrs is not None
    assert reading.attrs == {
        "nuclide": "Tc-99m",
        "reported_value": reading.value,
        "reported_text": reading.attrs["reported_text"],
        "reported_unit": "Bq",
        "cal": "236",
    }
    assert float(reading.attrs["reported_text"]) == reading.value
    assert reading.value == pytest.approx(800e6, rel=0.01)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"1.25E-11 A\r", 1.25e-11), (b"297 V\r", 297.0), (b"297\r", 297.0), (b"297 V>OK\r", 297.0),
     (b"?\r", None), (b">OK\r", None), (b"VIK\r", None), (b"nan\r", None), (b"\xff\r", None)],
)  # fmt: skip
def test_device_info_values(raw: bytes, expected: float | None) -> None:
    assert info_value(raw) == expected


@pytest.mark.fuzz
@given(st.binary(max_size=40))
def test_device_info_values_never_raise(raw: bytes) -> None:
    value = info_value(raw)
    assert value is None or abs(value) < float("inf")


@pytest.mark.parametrize("raw", [b".5E+10\r", b"740000000 Bq\r", b"7.4e\r", b"1,5\r"])
def test_activity_reply_is_strict(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        reply_figure(raw)
    assert info.value.raw == raw
