"""Radio-TLC scanner line parser: golden lines and fuzzing.

Protocol facts (docs/instruments.md, "Radio-TLC scanner"): the host starts a scan with one line
``batch,operator,range_mm,time_min\\n``; the scanner prints one line per 0.5 mm position,
``<position in mm x 10>; <counts>`` with a space after the semicolon (the example given is
``125; 48``), then ``end``; a failure prints ``Error: <text>``. It counts for
``time_min x 60 / (range_mm x 2)`` seconds at each position.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import SystemClock
from daq.errors import ProtocolError
from drivers.rtlc_scanner import (
    RtlcScannerConfig,
    RtlcScannerDriver,
    Scan,
    ScanEnd,
    ScanFailure,
    ScanPoint,
    dwell_s,
    parse_line,
    scan_positions_mm,
    start_line,
)

GOLDEN = [
    # The example line of the protocol description: 12.5 mm, 48 counts.
    (b"125; 48\n", ScanPoint(12.5, 48)),
    (b"125; 48\r\n", ScanPoint(12.5, 48)),
    (b"5; 0\r\n", ScanPoint(0.5, 0)),
    (b"1000; 123456\r\n", ScanPoint(100.0, 123456)),
    (b"0; 3", ScanPoint(0.0, 3)),
    (b"end\r\n", ScanEnd()),
    (b"end\n", ScanEnd()),
    (b"Error: motor stalled\r\n", ScanFailure("motor stalled")),
    (b"Error: bad start line\n", ScanFailure("bad start line")),
]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN)
def test_golden_lines(raw: bytes, expected: object) -> None:
    assert parse_line(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n", b"125 48\r\n", b"125;\r\n", b"; 48\r\n", b"-5; 48\r\n", b"12.5; 48\r\n",
     b"125; -48\r\n", b"125; 4.8\r\n", b"125; 48; 3\r\n", b"END\r\n", b"ende\r\n",
     b"\xff\xfe; 1\r\n", b"125; 48\xff\r\n", b"error motor\r\n", b"125;48x\r\n"],
)  # fmt: skip
def test_bad_lines_raise_protocol_error_with_raw(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_line(raw)
    assert info.value.raw == raw


@pytest.mark.fuzz
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        line = parse_line(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert isinstance(line, ScanPoint | ScanEnd | ScanFailure)
        if isinstance(line, ScanPoint):
            assert line.position_mm >= 0
            assert line.counts >= 0


@given(st.text(alphabet="0123456789; \r\nendEror:", max_size=30))
def test_near_miss_text_only_raises_protocol_error(text: str) -> None:
    raw = text.encode()
    try:
        parse_line(raw)
    except ProtocolError as exc:
        assert exc.raw == raw


@given(st.integers(0, 99_999), st.integers(0, 10**9), st.sampled_from(["\n", "\r\n", ""]))
def test_well_formed_points_round_trip(tenths: int, counts: int, ending: str) -> None:
    line = parse_line(f"{tenths}; {counts}{ending}".encode())
    assert line == ScanPoint(tenths / 10, counts)


def test_start_line_and_dwell_follow_the_protocol() -> None:
    assert start_line("LU-0421", "jd", 100, 5) == b"LU-0421,jd,100,5\n"
    # 5 min over 100 mm: 300 s / 200 positions.
    assert dwell_s(100, 5) == pytest.approx(1.5)
    assert dwell_s(60, 2) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("batch", "operator", "range_mm", "time_min"),
    [("A,B", "jd", 100, 5), ("A", "j\nd", 100, 5), ("", "jd", 100, 5), ("A", "jd", 0, 5), ("A", "jd", 100, 0),
     ("Ä", "jd", 100, 5)],
)  # fmt: skip
def test_start_line_refuses_what_the_protocol_cannot_carry(
    batch: str, operator: str, range_mm: int, time_min: int
) -> None:
    with pytest.raises(ValueError):
        start_line(batch, operator, range_mm, time_min)


@given(st.lists(st.integers(0, 1200), max_size=300), st.integers(1, 100))
def test_a_scan_never_accepts_more_positions_than_it_defines(tenths: list[int], range_mm: int) -> None:
    driver = RtlcScannerDriver(RtlcScannerConfig(name="t", kind="rtlc-scanner", port="x"), SystemClock())
    scan = Scan(scan_id="s", instrument="t", batch="b", operator="o", range_mm=range_mm, time_min=1,
                start_line=b"", started_ns=0)  # fmt: skip
    grid = set(scan_positions_mm(range_mm))
    for t in tenths:
        point = ScanPoint(t / 10, 1)
        try:
            driver._check_sequence(scan, point, b"%d; 1\n" % t)
        except ProtocolError as exc:
            assert exc.raw == b"%d; 1\n" % t
        else:
            assert point.position_mm in grid
            assert not scan.positions_mm or point.position_mm > scan.positions_mm[-1]
            scan.positions_mm.append(point.position_mm)
    assert len(scan.positions_mm) <= scan.expected_points == range_mm * 2
