"""Veenstra VDC-404/405 dose calibrator.

With its serial option set to "PC" the calibrator sends, unprompted, one line per
measurement: ``<isotope>: <activity> <unit>`` (docs/instruments.md, Veenstra VDC-404/405). The driver only
listens: it sends nothing, so it cannot disturb a measurement at the console.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from daq.clock import Clock
from daq.config.base import PositiveSeconds, SerialSettings
from daq.errors import ProtocolError
from daq.model import DeviceInfo, Reading
from daq.physics import UnknownUnit, canonical_unit
from daq.transport import LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver
from drivers.line import CalibratorInstrument, ReadoutChecks, display_figure

_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9 -]{0,15}?)\s*:\s*(\S+)\s+(\S+)\s*$")


def parse_line(raw: bytes) -> tuple[str, str, str]:
    """Parse one line into ``(isotope as shown, figure as shown, unit)``.

    The line has no checksum, so its fixed format is checked strictly: the activity is a
    displayed figure (:func:`~drivers.line.display_figure`), and ``Lu-177: .403 GBq`` (a
    dropped byte) is refused. Raises :class:`ProtocolError` (carrying ``raw``) for anything
    else; never another error.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("line is not ASCII", raw=raw) from exc
    match = _LINE.match(text.rstrip("\r\n"))
    if match is None:
        raise ProtocolError("expected '<isotope>: <activity> <unit>'", raw=raw)
    isotope, number, unit = match.groups()
    figure = display_figure(number, raw)
    try:
        unit = canonical_unit(unit)
    except UnknownUnit as exc:
        raise ProtocolError(str(exc), raw=raw) from exc
    return isotope.strip(), figure, unit


class Vdc404Config(CalibratorInstrument):
    kind: Literal["veenstra-vdc404"]
    channel: str = "activity"
    #: Silence longer than this is treated as a lost link (the calibrator sends every ~1 s).
    stale_after_s: PositiveSeconds = Field(default=10.0)


class Vdc404Driver(SerialDriver):
    kind = "veenstra-vdc404"
    config_model = Vdc404Config
    capability = Capability.STREAMING
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    config: Vdc404Config

    def __init__(self, config: Vdc404Config, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock, link_factory=link_factory)
        self.checks = ReadoutChecks(config)

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(model="Veenstra VDC-404")

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    def silence_limit_s(self) -> float | None:
        return self.config.stale_after_s

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        # No timer here: the supervisor times the silence (silence_limit_s).
        raw = await self.link.read_until(b"\n", None)
        acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
        if not raw.strip():
            return []
        try:
            isotope, figure, unit = parse_line(raw)
            reading = self.activity_reading(
                self.config.channel, figure, unit, nuclide=isotope, raw=raw, acq_ns=acq_ns, mono_ns=mono_ns
            )
        except ProtocolError as exc:
            exc.channel = self.config.channel
            raise
        return [self.checks(reading)]
