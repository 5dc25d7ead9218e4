"""A generic line-emitting calibrator for the ``line`` driver.

Illustrative only: the format is this project's own, *not* a claim about any vendor's
protocol (CRC-25R/55tR and Curiementor protocols are not public, docs/instruments.md). Each line reads
``A=<activity> <unit> N=<nuclide> T=<YYYY-MM-DD HH:MM:SS>`` CR LF, the time being the
device clock in UTC. With ``poll=1`` it answers each ``RD`` CR with one line; otherwise it
sends a line every ``interval_s``.

A matching driver config::

    kind = "line"
    pattern = 'A=(?P<activity>\\S+) (?P<unit>\\S+) N=(?P<nuclide>\\S+) T=(?P<device_time>.+)'
    device_time_format = "%Y-%m-%d %H:%M:%S"
    poll_command = "RD"    # only with poll=1
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from simulators.base import FaultyWire, SerialSimulator, SimulatorError, float_option
from simulators.source import SI_RANGES, DecayingSource, auto_range, display

PATTERN = r"A=(?P<activity>\S+) (?P<unit>\S+) N=(?P<nuclide>\S+) T=(?P<device_time>.+)"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class LineSimulator(SerialSimulator):
    kind = "line"
    description = "generic line-emitting calibrator for the 'line' driver (illustrative format)"

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide = options.pop("nuclide", "Ga-68")
        self.activity_bq = float_option(options, "activity_mbq", 1200.0) * 1e6
        self.interval_s = float_option(options, "interval_s", 1.0)
        self.noise = float_option(options, "noise", 0.002)
        poll = options.pop("poll", "0")
        if poll not in ("0", "1"):
            raise SimulatorError("option poll: expected 0 or 1")
        self.poll = poll == "1"
        self.reject_unknown(options)
        self.source: DecayingSource | None = None

    def line(self) -> bytes:
        if self.source is None:
            self.source = DecayingSource(
                self.nuclide, self.activity_bq, self.clock, self.rng, noise=self.noise
            )
        value, unit = auto_range(self.source.reading(bool(self.faults.get("freeze"))), SI_RANGES)
        stamp = datetime.fromtimestamp(self.clock.time_ns() // 1_000_000_000, tz=UTC).strftime(TIME_FORMAT)
        return f"A={display(value)} {unit} N={self.source.symbol} T={stamp}\r\n".encode("ascii")

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        if not self.poll:
            while True:
                await wire.send(self.line())
                await asyncio.sleep(self.interval_s)
        while True:
            raw = await reader.readuntil(b"\r")
            self.requests.append(raw)
            if raw.strip() == b"RD":
                await wire.send(self.line())
