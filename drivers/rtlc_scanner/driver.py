"""Open radio-TLC scanner (9600 baud, ASCII lines).

Protocol facts (docs/instruments.md, "Radio-TLC scanner"): the host starts a scan with one line
``batch,operator,range_mm,time_min\\n``. The scanner returns to the origin, then steps 0.5 mm
at a time, counting detector pulses for ``time_min x 60 / (range_mm x 2)`` seconds at each
position, and prints one line per position, ``<position in mm x 10>; <counts>`` (a space after
the semicolon, e.g. ``125; 48``). After the last position it prints ``end``, returns to the
origin and waits for the next start line. A failure prints ``Error: <text>``.

The driver is a streaming driver: :meth:`RtlcScannerDriver.read` waits for the next line, and
the supervisor times a silent scan (:meth:`RtlcScannerDriver.silence_limit_s`). A
scan is started by :meth:`RtlcScannerDriver.start_scan` (the daemon's TLC service calls it);
every position line becomes a ``counts`` reading and a ``scan_progress`` reading as it arrives,
so the lines are journaled while the scan runs and a connection lost mid-scan loses nothing.
The :class:`Scan` object collects the same lines for the trace record; it is finished by
``end`` (complete) or aborted by an ``Error:`` line, a silent scanner, a lost link or
:meth:`RtlcScannerDriver.abort_scan` (incomplete). Lines that arrive with no scan started by
this daemon (it restarted mid-scan) are journaled as UNCERTAIN readings, never dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from daq.clock import Clock
from daq.config.base import SerialSettings
from daq.errors import ConnectError, DaqError, ProtocolError
from daq.model import DeviceInfo, Quality, Reading, Reason
from daq.transport import LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver
from drivers.rtlc_scanner.protocol import (
    FIRST_MAX_MM,
    NO_ACTIVE_SCAN,
    RtlcScannerConfig,
    Scan,
    ScanEnd,
    ScanLine,
    ScanPoint,
    parse_line,
    start_line,
)


class ScannerBusy(DaqError):
    """A scan was requested while another is running on the same scanner."""


class RtlcScannerDriver(SerialDriver):
    kind = "rtlc-scanner"
    config_model = RtlcScannerConfig
    capability = Capability.STREAMING
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    config: RtlcScannerConfig

    COUNTS = "counts"
    PROGRESS = "scan_progress"

    def __init__(
        self, config: RtlcScannerConfig, clock: Clock, *, link_factory: LinkFactory = open_link
    ) -> None:
        super().__init__(config, clock, link_factory=link_factory)
        self.scan: Scan | None = None

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(model="open radio-TLC scanner")

    def channels(self) -> list[tuple[str, str]]:
        return [(self.COUNTS, "counts"), (self.PROGRESS, "%")]

    @property
    def connected(self) -> bool:
        return self._link is not None

    # -- scans ---------------------------------------------------------------------------

    async def start_scan(
        self,
        *,
        batch: str | None = None,
        operator: str | None = None,
        range_mm: int | None = None,
        time_min: int | None = None,
        run_id: str | None = None,
    ) -> Scan:
        """Send the start line and return the running :class:`Scan` (config gives the defaults).

        Raises :class:`ScannerBusy` while a scan runs, :class:`ValueError` for parameters the
        protocol cannot carry and :class:`ConnectError` when the scanner is not connected.
        Starting a scan is the scanner's acquisition itself, not a setting change, so it does
        not need ``allow_writes``; the caller audits it.
        """
        if self.scan is not None and not self.scan.done.is_set():
            raise ScannerBusy(f"{self.name}: scan {self.scan.scan_id} is still running")
        cfg = self.config
        params = (
            batch if batch is not None else cfg.batch,
            operator if operator is not None else cfg.operator,
            range_mm if range_mm is not None else cfg.range_mm,
            time_min if time_min is not None else cfg.time_min,
        )
        line = start_line(*params)
        link = self.link
        now = self.clock.time_ns()
        stamp = datetime.fromtimestamp(now / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        scan = Scan(
            scan_id=f"{self.name}-{stamp}Z",
            instrument=self.name,
            batch=params[0],
            operator=params[1],
            range_mm=params[2],
            time_min=params[3],
            start_line=line,
            started_ns=now,
            run_id=run_id,
        )
        # Whatever is buffered belongs to no scan of ours; it is journaled, not mixed in.
        self.scan = scan
        try:
            await link.write(line)
        except ConnectError as exc:
            self.scan = None
            raise ConnectError(f"{self.name}: cannot start a scan: {exc}") from exc
        # The scanner is now expected to speak (silence_limit_s): the supervisor times it.
        self.cadence_changed()
        return scan

    def abort_scan(self, reason: str) -> Scan | None:
        """Mark the running scan incomplete (the daemon stops); returns it, or ``None``."""
        scan = self.scan
        if scan is None or scan.done.is_set():
            return None
        scan.finish(self.clock.time_ns(), complete=False, reason=reason)
        return scan

    # -- reading -------------------------------------------------------------------------

    def _active(self) -> Scan | None:
        scan = self.scan
        return scan if scan is not None and not scan.done.is_set() else None

    def _scanner_error(
        self, text: str, raw: bytes, acq_ns: int, mono_ns: int, attrs: dict[str, Any]
    ) -> Reading:
        """The BAD progress reading of an ``Error: <text>`` line (with the scan's attrs, if any)."""
        return self.reading(
            self.PROGRESS,
            None,
            "%",
            quality=Quality.BAD,
            reason=Reason.DEVICE_ERROR,
            raw=raw,
            acq_ns=acq_ns,
            mono_ns=mono_ns,
            attrs={**attrs, "error": text},
        )

    def silence_limit_s(self) -> float | None:
        """An idle scanner is silent by design. During a scan the next line is due within the
        dwell time plus ``line_margin_s``; the first one also after ``home_s`` (the scanner
        returns to the origin first)."""
        scan = self._active()
        if scan is None:
            return None
        cfg = self.config
        return (0.0 if scan.positions_mm else cfg.home_s) + scan.dwell_s + cfg.line_margin_s

    def silenced(self, silent_s: float) -> str:
        scan = self._active()
        reason = f"no line from the scanner for {silent_s:g} s"
        if scan is None:
            return f"{self.name}: {reason}"
        scan.finish(self.clock.time_ns(), complete=False, reason=reason)
        return f"{self.name}: scan {scan.scan_id}: {reason}"

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        try:
            # No timer here: the supervisor times a silent scan (silence_limit_s).
            raw = await self.link.read_until(b"\n", None)
        except ConnectError as exc:
            self.abort_scan(f"connection lost: {exc}")
            raise
        except ProtocolError as exc:
            scan = self._active()
            if scan is not None:
                scan.bad_lines += 1
            exc.channel = self.COUNTS
            raise
        acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
        if not raw.strip():
            return []
        scan = self._active()
        try:
            line = parse_line(raw)
        except ProtocolError as exc:
            if scan is not None:
                scan.bad_lines += 1
                scan.raw += raw
            exc.channel = self.COUNTS
            raise
        if scan is None:
            return self._orphan(line, raw, acq_ns, mono_ns)
        scan.raw += raw
        if isinstance(line, ScanPoint):
            self._check_sequence(scan, line, raw)
        attrs = {"scan_id": scan.scan_id}
        out: list[Reading]
        if isinstance(line, ScanPoint):
            scan.positions_mm.append(line.position_mm)
            scan.counts.append(line.counts)
            out = [
                self.reading(
                    self.COUNTS,
                    line.counts,
                    "counts",
                    raw=raw,
                    acq_ns=acq_ns,
                    mono_ns=mono_ns,
                    attrs={**attrs, "position_mm": line.position_mm},
                ),
                self.reading(
                    self.PROGRESS, scan.progress_percent, "%", acq_ns=acq_ns, mono_ns=mono_ns, attrs=attrs
                ),
            ]
        elif isinstance(line, ScanEnd) and not scan.counts and scan.bad_lines:
            # Only refused lines, then 'end': the scanner was finishing a scan it had started
            # before ours (and ignored our start line). That 'end' is not ours.
            reason = "'end' before any valid position: the scanner was busy with a scan not started here"
            scan.finish(acq_ns, complete=False, reason=reason)
            return self._orphan(line, raw, acq_ns, mono_ns)
        elif isinstance(line, ScanEnd):
            scan.finish(acq_ns, complete=True)
            out = [
                self.reading(
                    self.PROGRESS,
                    100.0,
                    "%",
                    raw=raw,
                    acq_ns=acq_ns,
                    mono_ns=mono_ns,
                    attrs={**attrs, "end": True, "points": len(scan.counts)},
                )
            ]
        else:
            scan.finish(acq_ns, complete=False, reason=f"scanner error: {line.text}")
            out = [self._scanner_error(line.text, raw, acq_ns, mono_ns, attrs)]
        return out

    def _check_sequence(self, scan: Scan, point: ScanPoint, raw: bytes) -> None:
        """The protocol has no checksum, but positions climb in 0.5 mm steps from 0.5 mm to the
        range (:func:`scan_positions_mm`): a line whose position is off that grid, not beyond
        the last one, at the origin or past the range is corrupt (a dropped digit turns
        ``305; 12`` into ``35; 12``) and is refused, never stored, so a scan never holds
        more positions than it defines."""
        tenths = round(point.position_mm * 10)
        last = scan.positions_mm[-1] if scan.positions_mm else None
        problem = None
        if tenths % 5:
            problem = "is not on the 0.5 mm grid"
        elif tenths < 5:
            problem = "is the origin, not a counting position (the first is 0.5 mm)"
        elif last is None and point.position_mm > FIRST_MAX_MM:
            problem = "cannot start a scan (the scanner may be finishing one not started here)"
        elif last is not None and point.position_mm <= last:
            problem = f"does not follow {last:g} mm"
        elif point.position_mm > scan.range_mm:
            problem = f"is beyond the {scan.range_mm} mm range"
        if problem is not None:
            scan.bad_lines += 1
            raise ProtocolError(
                f"position {point.position_mm:g} mm {problem} (corrupt line)", raw=raw, channel=self.COUNTS
            )

    def _orphan(self, line: ScanLine, raw: bytes, acq_ns: int, mono_ns: int) -> list[Reading]:
        """A line with no scan of ours running: journal it as it is, flagged."""
        if isinstance(line, ScanPoint):
            return [
                self.reading(
                    self.COUNTS,
                    line.counts,
                    "counts",
                    quality=Quality.UNCERTAIN,
                    reason=NO_ACTIVE_SCAN,
                    raw=raw,
                    acq_ns=acq_ns,
                    mono_ns=mono_ns,
                    attrs={"position_mm": line.position_mm},
                )
            ]
        if isinstance(line, ScanEnd):
            return [
                self.reading(
                    self.PROGRESS,
                    100.0,
                    "%",
                    quality=Quality.UNCERTAIN,
                    reason=NO_ACTIVE_SCAN,
                    raw=raw,
                    acq_ns=acq_ns,
                    mono_ns=mono_ns,
                    attrs={"end": True},
                )
            ]
        return [self._scanner_error(line.text, raw, acq_ns, mono_ns, {})]

    async def close(self) -> None:
        self.abort_scan("connection closed")
        await super().close()
