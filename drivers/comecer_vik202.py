"""Veenstra/Comecer VIK-202 ionisation chamber: CR-terminated commands, polled.

Protocol facts (DOMAIN.md, VIK-202 row): 9600 8N1. Commands end with CR and are acknowledged
with ``>OK``; ``!R`` answers with the activity in Bq as a decimal number. The nuclide is
chosen by calibration factor ``!F<factor>`` (e.g. 762 = F-18, 236 = Tc-99m, 447 = I-131);
``!GF`` reads the factor. ``!BON``/``!BOFF`` background, ``!Z`` autozero and ``!A`` its
result, ``!GQ`` chamber current (A), ``!V`` HV battery, ``!GV`` software version.

Unverified: that value replies end with CR (the driver strips any LF too), and that a query
answers with the value alone while only commands answer ``>OK``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from daq.clock import Clock
from daq.config.base import NuclideName, SerialSettings
from daq.errors import DeviceError, DriverError, ProtocolError
from daq.model import DeviceInfo, Reading
from drivers.base import SerialDriver
from drivers.line import CalibratorInstrument, StaleWatch, exchange

#: Calibration factors DOMAIN.md names; a site adds its own with ``factor_nuclides``.
FACTOR_NUCLIDES: dict[str, str] = {"762": "F-18", "236": "Tc-99m", "447": "I-131"}

CR = b"\r"


def parse_number(raw: bytes) -> float:
    """A decimal reply (``!R``, ``!GQ``, ``!V``, ``!GF``); only raises :class:`ProtocolError`."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise ProtocolError("reply is not ASCII", raw=raw) from exc
    if text.startswith(">"):
        raise ProtocolError(f"expected a number, got {text!r}", raw=raw)
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError(f"expected a number, got {text[:40]!r}", raw=raw) from None
    if not math.isfinite(value):
        raise ProtocolError(f"{text!r} is not finite", raw=raw)
    return value


def factor_text(value: float) -> str:
    """A factor as the instrument shows it: ``762``, or ``76.5`` when it has decimals."""
    return f"{value:g}" if value != int(value) else str(int(value))


class Vik202Config(CalibratorInstrument):
    kind: Literal["comecer-vik202"]
    channel: str = "activity"
    #: Calibration factor -> nuclide, beyond (and overriding) :data:`FACTOR_NUCLIDES`.
    factor_nuclides: dict[Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")], NuclideName] = Field(
        default_factory=dict
    )
    #: Read the calibration factor every poll (it can change at the console).
    read_factor: bool = True


class Vik202Driver(SerialDriver):
    kind = "comecer-vik202"
    config_model = Vik202Config
    streaming = False
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    write_commands: ClassVar[dict[str, str]] = {
        "set_factor": "select the nuclide by calibration factor (!F<factor>), e.g. 762 for F-18",
        "zero": "autozero the chamber (!Z); its result is read back with !A",
        "background": "background subtraction on or off (!BON / !BOFF): value on|off",
    }
    config: Vik202Config

    def __init__(self, config: Vik202Config, clock: Clock):
        super().__init__(config, clock)
        self.stale = StaleWatch(config.stale_repeats)
        self.factors = {**FACTOR_NUCLIDES, **config.factor_nuclides}
        self._factor: str | None = None

    async def _ask(self, command: bytes) -> bytes:
        return await exchange(self.link, command + CR, CR, self.config.timeout_s)

    async def connect(self) -> DeviceInfo:
        await self.open()
        extra: dict[str, Any] = {}
        version = (await self._ask(b"!GV")).decode("ascii", "replace").strip()
        extra["chamber_current_a"] = parse_number(await self._ask(b"!GQ"))
        extra["hv_battery_v"] = parse_number(await self._ask(b"!V"))
        self._factor = factor_text(parse_number(await self._ask(b"!GF")))
        extra["cal_factor"] = self._factor
        return DeviceInfo(model="Comecer VIK-202", firmware=version or None, extra=extra)

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    async def read(self) -> list[Reading]:
        channel = self.config.channel
        try:
            if self.config.read_factor or self._factor is None:
                self._factor = factor_text(parse_number(await self._ask(b"!GF")))
            raw = await self._ask(b"!R")
            acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
            value = parse_number(raw)
        except ProtocolError as exc:
            exc.channel = channel
            raise
        out = [
            self.activity_reading(
                channel,
                value,
                "Bq",
                nuclide=self.factors.get(self._factor),
                raw=raw,
                acq_ns=acq_ns,
                mono_ns=mono_ns,
                cal=self._factor,
            )
        ]
        return [self.stale(r) for r in out]

    async def write(self, command: str, value: str | None = None) -> str:
        self.check_write(command)
        arg = (value or "").strip()
        if command == "set_factor":
            try:
                factor = float(arg)
            except ValueError:
                raise DriverError(f"{self.name}: set_factor needs a number, got {arg!r}") from None
            if not (math.isfinite(factor) and factor > 0):
                raise DriverError(f"{self.name}: set_factor needs a positive number")
            request = b"!F" + factor_text(factor).encode("ascii")
        elif command == "zero":
            request = b"!Z"
        else:
            if arg.lower() not in ("on", "off"):
                raise DriverError(f"{self.name}: background needs on or off, got {arg!r}")
            request = b"!BON" if arg.lower() == "on" else b"!BOFF"
        answer = (await self._ask(request)).decode("ascii", "replace").strip()
        if answer != ">OK":
            raise DeviceError(
                f"{self.name}: {request.decode()} answered {answer!r}, not >OK", code=answer[:20]
            )
        if command == "zero":
            answer += "; " + (await self._ask(b"!A")).decode("ascii", "replace").strip()
        if command == "set_factor":
            self._factor = None
        return answer
