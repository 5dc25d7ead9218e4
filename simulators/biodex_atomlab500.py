"""Biodex Atomlab 500 simulator: CR-terminated ASCII commands, CR LF replies, 19200 baud.

Protocol facts (docs/instruments.md, Biodex Atomlab 500): commands are at most 7 letters ended by
CR, a parameter follows a space or comma; replies end CR LF; ``^C`` (0x03) or ``1`` returns
the current activity; ``ISO`` changes the isotope.

Illustrative, not from a manual: the activity reply text ``<isotope> <activity> <unit>``
(e.g. ``Tc99m 12.34 mCi``), ``OK`` after ``ISO``, and ``?`` for an unknown command.
"""

from __future__ import annotations

import asyncio

from simulators.base import FaultyWire, SerialSimulator, float_option
from simulators.source import DecayingSource, auto_range, display, ranges_option


class Atomlab500Simulator(SerialSimulator):
    kind = "biodex-atomlab500"
    description = "Biodex Atomlab 500 dose calibrator (polled ASCII, 19200 baud)"

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide = options.pop("nuclide", "Tc-99m")
        self.activity_bq = float_option(options, "activity_mbq", 925.0) * 1e6
        self.noise = float_option(options, "noise", 0.002)
        self.ranges = ranges_option(options, "curie")
        self.reject_unknown(options)
        self.source: DecayingSource | None = None
        self.display_name: str | None = None

    def activity_line(self) -> bytes:
        if self.source is None:
            self.source = DecayingSource(
                self.nuclide, self.activity_bq, self.clock, self.rng, noise=self.noise
            )
        name = self.display_name or self.source.symbol.replace("-", "")
        value, unit = auto_range(self.source.reading(bool(self.faults.get("freeze"))), self.ranges)
        return f"{name} {display(value)} {unit}\r\n".encode("ascii")

    def answer(self, command: bytes) -> bytes:
        text = command.decode("ascii", "replace").strip()
        if text == "1" or text == "\x03":
            return self.activity_line()
        verb, _, arg = text.replace(",", " ").partition(" ")
        if verb.upper() == "ISO" and arg.strip():
            self.display_name = arg.strip()[:8]
            return b"OK\r\n"
        return b"?\r\n"

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        pending = b""
        while True:
            chunk = await reader.read(256)
            if not chunk:
                return
            pending += chunk
            while pending:
                if pending[0] == 0x03:  # ^C needs no CR
                    command, pending = pending[:1], pending[1:]
                elif b"\r" in pending:
                    command, _, pending = pending.partition(b"\r")
                    command = command.lstrip(b"\n")
                    if not command:
                        continue
                else:
                    pending = pending[-64:]
                    break
                self.requests.append(command)
                await wire.send(self.answer(command))
