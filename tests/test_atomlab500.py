"""Biodex Atomlab 500: the query bytes, the reply parser (golden lines, fuzzing) and config.

Protocol facts (docs/instruments.md, Biodex Atomlab 500): 19200 8N1; commands end with CR; ``^C``
(0x03) or ``1`` returns the current activity; replies end CR LF; ``ISO`` changes the isotope.
The reply text is unverified; the golden lines below are the driver's documented default
format ``<isotope> <activity> <unit>``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from daq.clock import SystemClock
from daq.errors import ProtocolError
from drivers.biodex_atomlab500 import QUERIES, Atomlab500Config, Atomlab500Driver, make_parser
from simulators.biodex_atomlab500 import Atomlab500Simulator

PARSER = make_parser()

# The parser keeps the figure and the isotope exactly as shown; the reading adds the table's
# spelling of the nuclide (see test_driver_polls_with_either_query).
GOLDEN = [
    (b"Tc99m 12.34 mCi\r\n", ("12.34", "mCi", "Tc99m")),
    (b"F18 1.234 GBq\r\n", ("1.234", "GBq", "F18")),
    (b"  I-131  450.0 MBq\r\n", ("450.0", "MBq", "I-131")),
    (b"Lu177 7.40 GBq\r\n", ("7.40", "GBq", "Lu177")),
    (b"Co57 12.0 uCi\r\n", ("12.0", "uCi", "Co57")),  # not in the table: kept as shown
]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN)
def test_golden_replies(raw: bytes, expected: tuple[str, str, str]) -> None:
    value, unit, nuclide, device_ns = PARSER.parse(raw)
    assert (value, unit, nuclide) == expected
    assert device_ns is None


@pytest.mark.parametrize("raw", [b"\r\n", b"OK\r\n", b"?\r\n", b"Tc99m 12.3 furlongs\r\n", b"Tc99m nan mCi\r\n",
                                 b"\xff\xfe 1 mCi\r\n", b"Tc99m .34 mCi\r\n", b"Tc99m 12. mCi\r\n"])  # fmt: skip
def test_bad_replies_raise_protocol_error_with_raw(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        PARSER.parse(raw)
    assert info.value.raw == raw


@pytest.mark.fuzz
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        figure, unit, _, _ = PARSER.parse(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert float(figure) == float(figure)
        assert unit in {"Bq", "kBq", "MBq", "GBq", "TBq", "uCi", "µCi", "mCi", "Ci"}


def test_query_bytes_are_the_documented_ones() -> None:
    assert QUERIES == {"1": b"1\r", "^C": b"\x03"}


@pytest.mark.parametrize("query", ["1", "^C"])
async def test_driver_polls_with_either_query(query: str) -> None:
    sim = Atomlab500Simulator(options={"nuclide": "Tc-99m", "activity_mbq": "925", "units": "curie"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    driver = Atomlab500Driver(
        Atomlab500Config(name="al", kind="biodex-atomlab500", port=listener.url, query=query),  # type: ignore[arg-type]
        SystemClock(),
    )
    try:
        await driver.connect()
        [reading] = await driver.read()
    finally:
        await driver.close()
        await listener.close()
    assert sim.requests == [QUERIES[query].rstrip(b"\r")]
    assert reading.attrs is not None
    assert reading.attrs["reported_unit"] == "mCi"
    assert reading.attrs["nuclide"] == "Tc-99m"
    # What the instrument showed is kept: the isotope setting and its spelling.
    assert reading.attrs["cal"] == reading.attrs["nuclide_shown"] == "Tc99m"
    # 925 MBq = 25 mCi; 1 mCi = 37 MBq exactly.
    assert reading.value == pytest.approx(reading.attrs["reported_value"] * 37e6)
    assert reading.value == pytest.approx(925e6, rel=0.01)


def test_reply_pattern_is_configurable_and_checked() -> None:
    cfg = Atomlab500Config(
        name="al", kind="biodex-atomlab500", port="/dev/ttyS0",
        reply_pattern=r"^A=(?P<activity>[0-9.]+)(?P<unit>[A-Za-z]+)$",
    )  # fmt: skip
    parser = make_parser(cfg.reply_pattern)
    assert parser.parse(b"A=12.5MBq\r\n")[:2] == ("12.5", "MBq")
    with pytest.raises(ValidationError, match="named groups"):
        Atomlab500Config(
            name="al", kind="biodex-atomlab500", port="/dev/ttyS0", reply_pattern=r"(?P<activity>\S+)"
        )


def test_default_line_settings_are_19200_8n1() -> None:
    driver = Atomlab500Driver(
        Atomlab500Config(name="a", kind="biodex-atomlab500", port="/dev/ttyS0"), SystemClock()
    )
    s = driver.line_settings()
    assert (s["baudrate"], s["bytesize"], s["parity"], s["stopbits"]) == (19200, 8, "N", 1)
