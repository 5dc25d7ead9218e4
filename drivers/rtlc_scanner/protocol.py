"""The open radio-TLC scanner's protocol and scans, free of I/O: the lines it prints, the start
line, the positions and dwell time of a scan, the config of a scanner, and :class:`Scan`, which
collects one scan's lines for its trace record. The driver that speaks it is :mod:`.driver`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Annotated, Literal

from pydantic import Field

from daq.config.base import PositiveSeconds, SerialInstrument
from daq.errors import ProtocolError

#: ``<position in mm x 10>; <counts>``; the scanner writes one space after the semicolon,
#: the parser tolerates any amount of blank space there.
_POINT = re.compile(r"^(\d{1,6}); *(\d{1,12})$")
_ERROR = re.compile(r"^Error: ?(.*)$")
#: Batch and operator go into a comma-separated start line: no commas, no line breaks.
FIELD_PATTERN = r"^[^,\r\n]{1,40}$"
STEP_MM = 0.5
#: A scan starts at the origin; a first line further along belongs to another scan.
FIRST_MAX_MM = 5.0

#: Reason of readings that arrive while no scan started by this daemon is running.
NO_ACTIVE_SCAN = "no_active_scan"


@dataclasses.dataclass(frozen=True, slots=True)
class ScanPoint:
    position_mm: float
    counts: int


@dataclasses.dataclass(frozen=True, slots=True)
class ScanEnd:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ScanFailure:
    text: str


ScanLine = ScanPoint | ScanEnd | ScanFailure


def parse_line(raw: bytes) -> ScanLine:
    """Parse one line from the scanner (terminator included or not).

    Raises :class:`ProtocolError` carrying ``raw`` for anything but a position line, ``end``
    or ``Error: <text>``; never another error.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("line is not ASCII", raw=raw) from exc
    text = text.rstrip("\r\n").strip(" \t")
    if text == "end":
        return ScanEnd()
    error = _ERROR.match(text)
    if error is not None:
        return ScanFailure(error.group(1).strip() or "(no text)")
    point = _POINT.match(text)
    if point is None:
        raise ProtocolError("expected '<position mm x 10>; <counts>', 'end' or 'Error: <text>'", raw=raw)
    return ScanPoint(int(point.group(1)) / 10.0, int(point.group(2)))


def start_line(batch: str, operator: str, range_mm: int, time_min: int) -> bytes:
    """The line that starts a scan; raises :class:`ValueError` for fields the protocol cannot carry."""
    for name, value in (("batch", batch), ("operator", operator)):
        if not re.match(FIELD_PATTERN, value) or not value.isascii():
            raise ValueError(f"{name} {value!r}: 1 to 40 ASCII characters, no comma or line break")
    if not 1 <= range_mm <= 1000:
        raise ValueError(f"range_mm {range_mm}: expected 1 to 1000")
    if not 1 <= time_min <= 1440:
        raise ValueError(f"time_min {time_min}: expected 1 to 1440")
    return f"{batch},{operator},{range_mm},{time_min}\n".encode("ascii")


def scan_positions_mm(range_mm: float) -> list[float]:
    """The positions a scan of ``range_mm`` measures, defined once: the scanner steps 0.5 mm
    from the origin before each count, so 0.5, 1.0, ... up to ``range_mm`` (``range_mm x 2``
    positions, which is also what the dwell time divides the scan time by)."""
    return [k * STEP_MM for k in range(1, round(range_mm / STEP_MM) + 1)]


def dwell_s(range_mm: int, time_min: int) -> float:
    """Counting time at each position: ``time_min x 60 / (range_mm x 2)`` seconds."""
    return time_min * 60.0 / (range_mm * 2)


class RtlcScannerConfig(SerialInstrument):
    """A radio-TLC scanner. The scan keys are the defaults of every scan this daemon starts;
    ``scan_every_s`` starts one periodically (unattended use, the demo)."""

    kind: Literal["rtlc-scanner"]
    range_mm: Annotated[int, Field(ge=1, le=1000)] = 100
    time_min: Annotated[int, Field(ge=1, le=1440)] = 5
    batch: Annotated[str, Field(pattern=FIELD_PATTERN)] = "QC"
    operator: Annotated[str, Field(pattern=FIELD_PATTERN)] = "daq"
    #: The ``[[tlc.methods]]`` entry that analyses this scanner's traces (none: trace only).
    method: str | None = None
    #: Start a scan every this many seconds (start to start); unset: only on demand.
    scan_every_s: PositiveSeconds | None = None
    #: Longest wait for the first position line (the scanner first returns to the origin).
    home_s: PositiveSeconds = 60.0
    #: Slack on top of the dwell time before a silent scanner counts as a lost scan.
    line_margin_s: PositiveSeconds = 10.0


@dataclasses.dataclass(eq=False)
class Scan:
    """One scan started by this driver: the parameters and every line received for it."""

    scan_id: str
    instrument: str
    batch: str
    operator: str
    range_mm: int
    time_min: int
    start_line: bytes
    started_ns: int
    run_id: str | None = None
    positions_mm: list[float] = dataclasses.field(default_factory=list)
    counts: list[int] = dataclasses.field(default_factory=list)
    raw: bytearray = dataclasses.field(default_factory=bytearray)
    bad_lines: int = 0
    ended_ns: int | None = None
    complete: bool = False
    abort_reason: str | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def dwell_s(self) -> float:
        return dwell_s(self.range_mm, self.time_min)

    @property
    def expected_points(self) -> int:
        return len(scan_positions_mm(self.range_mm))

    @property
    def progress_percent(self) -> float:
        if self.complete:
            return 100.0
        if not self.positions_mm:
            return 0.0
        return max(0.0, min(100.0, self.positions_mm[-1] / self.range_mm * 100.0))

    def finish(self, ended_ns: int, *, complete: bool, reason: str | None = None) -> None:
        if self.done.is_set():
            return
        self.ended_ns = ended_ns
        self.complete = complete
        self.abort_reason = reason
        self.done.set()
