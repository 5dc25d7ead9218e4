"""Veenstra VDC-404 simulator: unsolicited ``<isotope>: <activity> <unit>`` lines.

Protocol fact (docs/instruments.md, Veenstra VDC-404/405): with the serial option "PC" the calibrator sends
one line per measurement, unprompted. Lines end CR LF.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from simulators.base import FaultyWire, SerialSimulator, float_option
from simulators.source import DecayingSource, auto_range, display, ranges_option


class Vdc404Simulator(SerialSimulator):
    kind = "veenstra-vdc404"
    description = "Veenstra VDC-404 dose calibrator (unsolicited ASCII lines, 9600 baud)"
    extra_faults: ClassVar[dict[str, str]] = {
        # An empty chamber after zeroing: the display shows a negative zero.
        "zeroed": "1 = the display reads -0.000 MBq (an empty chamber after zeroing)",
    }

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide = options.pop("nuclide", "F-18")
        self.activity_bq = float_option(options, "activity_mbq", 7400.0) * 1e6
        self.interval_s = float_option(options, "interval_s", 1.0)
        self.ranges = ranges_option(options, "si")
        self.reject_unknown(options)
        self.source: DecayingSource | None = None

    def line(self) -> bytes:
        if self.source is None:
            self.source = DecayingSource(self.nuclide, self.activity_bq, self.clock, self.rng)
        if self.faults.get("zeroed"):
            return f"{self.source.symbol}: -0.000 MBq\r\n".encode("ascii")
        value, unit = auto_range(self.source.reading(bool(self.faults.get("freeze"))), self.ranges)
        return f"{self.source.symbol}: {display(value)} {unit}\r\n".encode("ascii")

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        while True:
            await wire.send(self.line())
            await asyncio.sleep(self.interval_s)
