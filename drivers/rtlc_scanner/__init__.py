"""Open radio-TLC scanner: :mod:`.protocol` (its lines, scans and config, free of I/O) and
:mod:`.driver` (the streaming driver that starts scans and journals their lines)."""

from __future__ import annotations

from drivers.rtlc_scanner.driver import RtlcScannerDriver, ScannerBusy
from drivers.rtlc_scanner.protocol import (
    FIELD_PATTERN,
    FIRST_MAX_MM,
    NO_ACTIVE_SCAN,
    STEP_MM,
    RtlcScannerConfig,
    Scan,
    ScanEnd,
    ScanFailure,
    ScanLine,
    ScanPoint,
    dwell_s,
    parse_line,
    scan_positions_mm,
    start_line,
)

__all__ = [
    "FIELD_PATTERN",
    "FIRST_MAX_MM",
    "NO_ACTIVE_SCAN",
    "STEP_MM",
    "RtlcScannerConfig",
    "RtlcScannerDriver",
    "Scan",
    "ScanEnd",
    "ScanFailure",
    "ScanLine",
    "ScanPoint",
    "ScannerBusy",
    "dwell_s",
    "parse_line",
    "scan_positions_mm",
    "start_line",
]
