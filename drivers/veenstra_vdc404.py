"""Veenstra VDC-404/405 dose calibrator.

With its serial option set to "PC" the calibrator sends, unprompted, one line per
measurement: ``<isotope>: <activity> <unit>`` (DOMAIN.md, Veenstra row). The driver only
listens: it sends nothing, so it cannot disturb a measurement at the console.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, Literal

from pydantic import Field

from daq.config.base import PositiveSeconds, SerialInstrument, SerialSettings
from daq.errors import ProtocolError, ReadTimeout
from daq.model import DeviceInfo, Reading
from daq.physics import UnknownUnit, canonical_unit
from drivers.base import SerialDriver

_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9 -]{0,15}?)\s*:\s*(\S+)\s+(\S+)\s*$")


def parse_line(raw: bytes) -> tuple[str, float, str]:
    """Parse one line into ``(isotope, activity, unit)``.

    Raises :class:`ProtocolError` (carrying ``raw``) for anything else; never another error.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("line is not ASCII", raw=raw) from exc
    match = _LINE.match(text.rstrip("\r\n"))
    if match is None:
        raise ProtocolError("expected '<isotope>: <activity> <unit>'", raw=raw)
    isotope, number, unit = match.groups()
    try:
        value = float(number)
    except ValueError as exc:
        raise ProtocolError(f"activity {number!r} is not a number", raw=raw) from exc
    if not math.isfinite(value):
        raise ProtocolError(f"activity {number!r} is not finite", raw=raw)
    try:
        unit = canonical_unit(unit)
    except UnknownUnit as exc:
        raise ProtocolError(str(exc), raw=raw) from exc
    return isotope.strip(), value, unit


class Vdc404Config(SerialInstrument):
    kind: Literal["veenstra-vdc404"]
    channel: str = "activity"
    #: Silence longer than this is treated as a lost link (the calibrator sends every ~1 s).
    stale_after_s: PositiveSeconds = Field(default=10.0)


class Vdc404Driver(SerialDriver):
    kind = "veenstra-vdc404"
    config_model = Vdc404Config
    streaming = True
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    config: Vdc404Config

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(model="Veenstra VDC-404")

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    async def read(self) -> list[Reading]:
        try:
            raw = await self.link.read_until(b"\n", self.config.stale_after_s)
        except ReadTimeout as exc:
            raise ReadTimeout(f"{self.name}: no line for {self.config.stale_after_s:g} s") from exc
        acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
        if not raw.strip():
            return []
        try:
            isotope, value, unit = parse_line(raw)
        except ProtocolError as exc:
            exc.channel = self.config.channel
            raise
        return [
            self.activity_reading(
                self.config.channel, value, unit, nuclide=isotope, raw=raw, acq_ns=acq_ns, mono_ns=mono_ns
            )
        ]
