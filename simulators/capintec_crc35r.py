"""Capintec CRC-35R simulator: framed requests, ``DR`` replies, up to 8 chambers.

Protocol facts (docs/instruments.md, Capintec CRC-35R): a frame is STX (0x02), a length byte
``'A'`` + number of payload characters, the payload, a checksum
((STX + length byte + sum of payload bytes) AND 0x7F) + 0x21, and ETX (0x03); ``R1`` is
``02 43 52 31 69 03``. ``R<n>`` is answered ``DR<n>,<nuclide padded>,<activity 6 chars><unit
code>``, unit codes 3/4/5 = kBq/MBq/GBq. ``I<n><nuclide padded to 6>`` selects the nuclide.

Illustrative, not from a manual: replies are framed like requests; ``I<n>`` is acknowledged
with the payload ``OK``; a request with a bad checksum gets no reply (as a real instrument
would ignore line noise).
"""

from __future__ import annotations

import asyncio

from simulators.base import FaultyWire, SerialSimulator, SimulatorError, float_option
from simulators.source import DecayingSource, display

STX, ETX = 0x02, 0x03
_CODES = (("5", 1e9), ("4", 1e6), ("3", 1e3))


def crc35r_frame(payload: bytes) -> bytes:
    length = 0x41 + len(payload)
    total = STX + length + sum(payload)
    return bytes([STX, length]) + payload + bytes([(total & 0x7F) + 0x21, ETX])


def activity_field(value_bq: float) -> tuple[str, str]:
    """Six characters of activity and the unit code, autoranged like the display."""
    for code, factor in _CODES:
        if value_bq >= factor or code == "3":
            shown = value_bq / factor
            break
    text = display(shown, 4)
    if len(text) > 6:
        text = f"{shown:.0f}" if shown >= 1 else f"{shown:.4f}"
    return text[:6].rjust(6), code


class Crc35rSimulator(SerialSimulator):
    kind = "capintec-crc35r"
    description = "Capintec CRC-35R dose calibrator (framed polled protocol, 4800 baud, 1-8 chambers)"
    extra_faults = {"badsum": "probability per reply of a wrong checksum"}  # noqa: RUF012

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide_names = [n.strip() for n in options.pop("nuclide", "F18").split(",")]
        self.activity_bq = float_option(options, "activity_mbq", 7400.0) * 1e6
        chambers = int(float_option(options, "chambers", 1))
        if not 1 <= chambers <= 8:
            raise SimulatorError("option chambers: expected 1 to 8")
        self.chambers = chambers
        self.noise = float_option(options, "noise", 0.002)
        self.reject_unknown(options)
        self.sources: dict[int, DecayingSource] = {}
        self.settings: dict[int, str] = {}

    def source(self, chamber: int) -> DecayingSource:
        if chamber not in self.sources:
            name = self.nuclide_names[(chamber - 1) % len(self.nuclide_names)]
            # Each chamber holds its own vial; a calibration number as setting still decays as F-18.
            symbol = name if any(c.isalpha() for c in name) else "F-18"
            self.sources[chamber] = DecayingSource(
                symbol, self.activity_bq / chamber, self.clock, self.rng, noise=self.noise
            )
            self.settings[chamber] = name
        return self.sources[chamber]

    def reply_for(self, payload: bytes) -> bytes | None:
        text = payload.decode("ascii", "replace")
        if len(text) == 2 and text[0] == "R" and text[1] in "12345678" and int(text[1]) <= self.chambers:
            n = int(text[1])
            value = self.source(n).reading(bool(self.faults.get("freeze")))
            field, code = activity_field(value)
            return f"DR{n},{self.settings[n]:<6},{field}{code}".encode("ascii")
        if len(text) >= 3 and text[0] == "I" and text[1] in "12345678":
            n = int(text[1])
            self.source(n)
            self.settings[n] = text[2:].strip()[:6]
            return b"OK"
        return None

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        while True:
            raw = await reader.readuntil(bytes([ETX]))
            start = raw.rfind(bytes([STX]))
            if start < 0:
                continue
            request = raw[start:]
            self.requests.append(request)
            payload = request[2:-2]
            if len(request) < 4 or crc35r_frame(payload) != request:
                continue
            reply = self.reply_for(payload)
            if reply is None:
                continue
            out = crc35r_frame(reply)
            if self.faults.get("badsum", 0) and self.rng.random() < self.faults["badsum"]:
                out = out[:-2] + bytes([0x21 + (out[-2] - 0x21 + 1) % 0x7F]) + out[-1:]
            await wire.send(out)
