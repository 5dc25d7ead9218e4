"""Capintec CRC-35R framing and reply parser: golden frames and fuzzing.

Protocol facts (docs/instruments.md, Capintec CRC-35R): STX, length byte 'A' + number of command
characters, command, checksum ((STX + length + sum of command bytes) AND 0x7F) + 0x21, ETX;
``R1`` is ``02 43 52 31 69 03``; the reply carries ``DRx,<nuclide or cal number, space
padded>,<activity 6 characters><unit code>``, unit codes 3/4/5 = kBq/MBq/GBq, ``&`` marks a
division in a calibration number.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import SystemClock
from daq.errors import ProtocolError
from drivers.capintec_crc35r import (
    UNIT_CODES,
    Crc35rConfig,
    Crc35rDriver,
    checksum,
    frame,
    parse_reply,
    unframe,
)
from simulators.capintec_crc35r import Crc35rSimulator, crc35r_frame

# docs/instruments.md worked example: R1 (read chamber 1).
R1 = bytes.fromhex("02 43 52 31 69 03")


def test_golden_request_from_the_worked_example() -> None:
    assert frame(b"R1") == R1
    assert checksum(0x43, b"R1") == 0x69


def test_simulator_frames_agree_with_the_golden_frame() -> None:
    # The simulator has its own framing code; they meet only on this golden frame.
    assert crc35r_frame(b"R1") == R1


def _reply(payload: str, *, length: int | None = None, bad_sum: bool = False) -> bytes:
    body = payload.encode("ascii")
    n = 0x41 + len(body) if length is None else length
    s = ((0x02 + n + sum(body)) & 0x7F) + 0x21
    if bad_sum:
        s = 0x21 + (s - 0x21 + 1) % 0x7F
    return bytes([0x02, n]) + body + bytes([s, 0x03])


GOLDEN = [
    ("DR1,F18   ,123.4 4", (1, "F18", "123.4", "MBq")),
    ("DR2,Tc99m , 1.234 5", None),  # 7 activity characters: not the documented 6
    ("DR2,Tc99m , 1.2345", (2, "Tc99m", "1.234", "GBq")),
    ("DR8,Ac225 ,  45.63", (8, "Ac225", "45.6", "kBq")),
    ("DR3,123&2 , 7.4004", (3, "123&2", "7.400", "MBq")),  # the figure keeps its trailing zeros
    ("DR1,Lu177 ,  .4035", None),  # a figure that lost its leading digit
    ("DR1,Lu177 , 7.4-35", None),
    ("DR1,Lu177 ,  7400", None),  # activity without a unit code
    ("DR1,F18   ,123.4 9", None),  # unit code 9 is not documented
    ("DR9,F18   ,123.4 4", None),  # there is no chamber 9
    ("XR1,F18   ,123.4 4", None),
]


@pytest.mark.parametrize(("payload", "expected"), GOLDEN)
def test_golden_replies(payload: str, expected: tuple[int, str, str, str] | None) -> None:
    raw = _reply(payload)
    if expected is None:
        with pytest.raises(ProtocolError) as info:
            parse_reply(raw)
        assert info.value.raw == raw
    else:
        assert parse_reply(raw) == expected


def test_unit_codes_are_the_documented_ones() -> None:
    assert UNIT_CODES == {"3": "kBq", "4": "MBq", "5": "GBq"}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_reply("DR1,F18   ,123.4 4", bad_sum=True), "checksum"),
        (_reply("DR1,F18   ,123.4 4", length=0x41 + 3), "length"),
        (_reply("DR1,F18   ,123.4 4")[:-1], "ETX"),
        (_reply("DR1,F18   ,123.4 4")[1:], "STX"),
        (b"", "STX"),
    ],
)
def test_corrupt_frames_raise_protocol_error_with_raw(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why) as info:
        parse_reply(raw)
    assert info.value.raw == raw


@pytest.mark.fuzz
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        chamber, _, figure, unit = parse_reply(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert 1 <= chamber <= 8
        assert unit in UNIT_CODES.values()
        assert float(figure) == float(figure)


@pytest.mark.fuzz
@given(st.binary(max_size=40))
def test_arbitrary_payloads_in_valid_frames_only_raise_protocol_error(payload: bytes) -> None:
    raw = (
        bytes([0x02, (0x41 + len(payload)) & 0xFF])
        + payload
        + bytes([checksum(0x41 + len(payload), payload) & 0xFF, 3])
    )
    try:
        parse_reply(raw)
    except ProtocolError as exc:
        assert exc.raw == raw


@given(
    st.integers(1, 8),
    st.sampled_from(["F18", "Ga68", "Tc99m", "Lu177", "Ac225", "123&2", "450"]),
    st.floats(min_value=0, max_value=999.9, allow_nan=False),
    st.sampled_from(sorted(UNIT_CODES)),
)
def test_well_formed_replies_round_trip(chamber: int, setting: str, value: float, code: str) -> None:
    payload = f"DR{chamber},{setting:<6},{value:6.1f}{code}"
    got = parse_reply(frame(payload.encode("ascii")))
    assert got[0] == chamber
    assert got[1] == setting
    assert got[2] == f"{value:.1f}"
    assert got[3] == UNIT_CODES[code]
    assert unframe(frame(payload.encode())) == payload.encode()


async def test_driver_reads_every_configured_chamber() -> None:
    sim = Crc35rSimulator(options={"chambers": "3", "nuclide": "F18,123&2,Ac225"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    cfg = Crc35rConfig(name="crc", kind="capintec-crc35r", port=listener.url, chambers=[1, 2, 3])
    driver = Crc35rDriver(cfg, SystemClock())
    try:
        await driver.connect()
        readings = await driver.read()
    finally:
        await driver.close()
        await listener.close()
    assert [r.channel for r in readings] == ["chamber1", "chamber2", "chamber3"]
    assert sim.requests[:3] == [frame(b"R1"), frame(b"R2"), frame(b"R3")]
    one, two, three = (r.attrs for r in readings)
    assert one is not None
    assert two is not None
    assert three is not None
    assert (one["nuclide"], one["nuclide_shown"], one["cal"]) == ("F-18", "F18", "F18")
    assert (two["nuclide"], two["cal"]) == (None, "123&2")
    assert "nuclide_shown" not in two
    assert (three["nuclide"], three["nuclide_shown"]) == ("Ac-225", "Ac225")
    for r in readings:
        assert r.unit == "Bq"
        assert r.attrs is not None
        assert r.value == pytest.approx(
            r.attrs["reported_value"] * {"kBq": 1e3, "MBq": 1e6, "GBq": 1e9}[r.attrs["reported_unit"]]
        )
        assert float(r.attrs["reported_text"]) == r.attrs["reported_value"]
        assert r.raw is not None
        assert r.raw[0] == 0x02
        assert r.raw[-1] == 0x03


def test_config_rejects_chamber_9_and_repeats() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Crc35rConfig(name="c", kind="capintec-crc35r", port="/dev/ttyS0", chambers=[9])
    with pytest.raises(ValidationError):
        Crc35rConfig(name="c", kind="capintec-crc35r", port="/dev/ttyS0", chambers=[1, 1])


def test_default_line_settings_are_4800_8n1() -> None:
    driver = Crc35rDriver(Crc35rConfig(name="c", kind="capintec-crc35r", port="/dev/ttyS0"), SystemClock())
    s = driver.line_settings()
    assert (s["baudrate"], s["bytesize"], s["parity"], s["stopbits"]) == (4800, 8, "N", 1)
