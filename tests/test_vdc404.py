"""Veenstra VDC-404 parser: golden lines and fuzzing.

Protocol fact (docs/instruments.md, Veenstra VDC-404/405): with the serial option "PC" the calibrator sends
unsolicited lines ``<isotope>: <activity> <unit>``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.errors import ProtocolError
from drivers.veenstra_vdc404 import parse_line

# The figure is kept exactly as displayed (trailing zeros included); the isotope as shown.
GOLDEN = [
    (b"F-18: 123.4 MBq\r\n", ("F-18", "123.4", "MBq")),
    (b"Tc99m: 0.512 GBq\r\n", ("Tc99m", "0.512", "GBq")),
    (b"Lu-177: 7.400 GBq\n", ("Lu-177", "7.400", "GBq")),
    (b"I-131:12.5 mCi\r\n", ("I-131", "12.5", "mCi")),
    (b"Ga-68: 850 kBq\r\n", ("Ga-68", "850", "kBq")),
]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN)
def test_golden_lines(raw: bytes, expected: tuple[str, str, str]) -> None:
    assert parse_line(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n", b"F-18 123.4 MBq\r\n", b"F-18: abc MBq\r\n", b"F-18: 12 furlongs\r\n",
     b"F-18: nan MBq\r\n", b"F-18: inf MBq\r\n", b"\xff\xfe: 1 MBq\r\n", b": 1 MBq\r\n",
     # A dropped byte leaves a figure the display never shows: refused, not stored.
     b"Lu-177: .403 GBq\r\n", b"Lu-177: 7. GBq\r\n", b"Lu-177: 7.4.3 GBq\r\n", b"Lu-177: 1e3 GBq\r\n",
     b"Lu-177: +7.403 GBq\r\n", b"Lu-177: 7,403 GBq\r\n"],
)  # fmt: skip
def test_bad_lines_raise_protocol_error_with_raw(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_line(raw)
    assert info.value.raw == raw


@pytest.mark.fuzz
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        isotope, figure, unit = parse_line(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert isotope
        assert unit in {"Bq", "kBq", "MBq", "GBq", "TBq", "uCi", "µCi", "mCi", "Ci"}
        assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", figure)


@given(
    st.sampled_from(["F-18", "Ga-68", "Lu-177", "Ac-225", "Tc-99m"]),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.sampled_from(["kBq", "MBq", "GBq", "mCi", "uCi"]),
)
def test_well_formed_lines_round_trip(isotope: str, value: float, unit: str) -> None:
    text = f"{isotope}: {value:.4f} {unit}\r\n".encode()
    got = parse_line(text)
    assert got[0] == isotope
    assert got[1] == f"{value:.4f}"
    assert got[2] == unit
