"""Veenstra/Comecer VIK-202 chamber simulator: ``!`` commands ended by CR, 9600 baud.

Protocol facts (docs/instruments.md, VIK-202): commands end with CR and are acknowledged with
``>OK``; ``!R`` answers the activity in Bq as a decimal number; ``!F<factor>`` sets the
calibration factor (762 = F-18, 236 = Tc-99m, 447 = I-131), ``!GF`` reads it; ``!BON``/``!BOFF``
background, ``!Z`` autozero and ``!A`` its result, ``!GQ`` chamber current (A), ``!V`` HV
battery, ``!GV`` software version.

Illustrative, not from a manual: replies end with CR; queries answer the value alone; an
unknown command answers ``>ERR``; the texts of ``!GV`` and ``!A``.
"""

from __future__ import annotations

import asyncio

from simulators.base import FaultyWire, SerialSimulator, float_option
from simulators.source import DecayingSource

_FACTORS = {"F-18": "762", "Tc-99m": "236", "I-131": "447"}


class Vik202Simulator(SerialSimulator):
    kind = "comecer-vik202"
    description = "Comecer VIK-202 ionisation chamber (polled ASCII, activity in Bq, 9600 baud)"

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide = options.pop("nuclide", "F-18")
        self.activity_bq = float_option(options, "activity_mbq", 15000.0) * 1e6
        self.noise = float_option(options, "noise", 0.002)
        self.factor = options.pop("factor", _FACTORS.get(self.nuclide, "762"))
        self.reject_unknown(options)
        self.source: DecayingSource | None = None
        self.background = False
        self.version = "VIK-202 2.10 (simulated)"

    def activity(self) -> str:
        if self.source is None:
            self.source = DecayingSource(
                self.nuclide, self.activity_bq, self.clock, self.rng, noise=self.noise
            )
        value = self.source.reading(bool(self.faults.get("freeze")))
        # Four significant figures, printed as a plain decimal number of becquerel.
        return f"{float(f'{value:.4g}'):.0f}" if value >= 1000 else f"{value:.1f}"

    def answer(self, text: str) -> str:
        if text == "!R":
            return self.activity()
        if text == "!GF":
            return self.factor
        if text.startswith("!F") and len(text) > 2:
            try:
                float(text[2:])
            except ValueError:
                return ">ERR"
            self.factor = text[2:]
            return ">OK"
        if text in ("!BON", "!BOFF"):
            self.background = text == "!BON"
            return ">OK"
        if text == "!Z":
            return ">OK"
        if text == "!A":
            return "0.0E+00"
        if text == "!GQ":
            return f"{(self.source.true_activity() if self.source else self.activity_bq) * 1e-18:.3E}"
        if text == "!V":
            return "512.0"
        if text == "!GV":
            return self.version
        return ">ERR"

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        while True:
            raw = await reader.readuntil(b"\r")
            self.requests.append(raw)
            text = raw.decode("ascii", "replace").strip()
            if text:
                await wire.send(self.answer(text).encode("ascii") + b"\r")
