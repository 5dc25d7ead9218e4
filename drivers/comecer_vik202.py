"""Veenstra/Comecer VIK-202 ionisation chamber: CR-terminated commands, polled.

Protocol facts (docs/instruments.md, VIK-202): 9600 8N1. Commands end with CR and are acknowledged
with ``>OK``; ``!R`` answers with the activity in Bq as a decimal number. The nuclide is
chosen by calibration factor ``!F<factor>`` (e.g. 762 = F-18, 236 = Tc-99m, 447 = I-131);
``!GF`` reads the factor. ``!BON``/``!BOFF`` background, ``!Z`` autozero and ``!A`` its
result, ``!GQ`` chamber current (A), ``!V`` HV battery, ``!GV`` software version.

Unverified: that value replies end with CR (the driver strips any LF too), and that a query
answers with the value alone while only commands answer ``>OK``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from daq.clock import Clock
from daq.config.base import NuclideName, SerialSettings
from daq.errors import DeviceError, DriverError, ProtocolError, ReadTimeout
from daq.model import DeviceInfo, Reading
from daq.transport import LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver
from drivers.line import CalibratorInstrument, ReadoutChecks, display_figure, exchange

#: Calibration factors docs/instruments.md names (VIK-202); a site adds its own with ``factor_nuclides``.
FACTOR_NUCLIDES: dict[str, str] = {"762": "F-18", "236": "Tc-99m", "447": "I-131"}

CR = b"\r"
#: The acknowledgement of a command (docs/instruments.md, VIK-202); some firmware also sends it after a value.
ACK = ">OK"


def parse_number(raw: bytes) -> float:
    """A decimal reply (``!R``, ``!GF``); only raises :class:`ProtocolError`.

    The number alone (an exponent is allowed: ``1.5E+10``); see :func:`reply_figure`.
    """
    return float(reply_figure(raw))


def reply_figure(raw: bytes) -> str:
    """The decimal text of a value reply, exactly as sent (``740000000``, ``1.5E+10``).

    Strict: an acknowledgement (``>OK``), a ``?``, a unit suffix or a figure that lost a byte
    (``.5E+10``) raises :class:`ProtocolError` carrying ``raw``.
    """
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise ProtocolError("reply is not ASCII", raw=raw) from exc
    if text.startswith(">"):
        raise ProtocolError(f"expected a number, got {text!r}", raw=raw)
    try:
        return display_figure(text, raw, exponent=True)
    except ProtocolError:
        raise ProtocolError(f"expected a number, got {text[:40]!r}", raw=raw) from None


#: A device-information reply: a number, optionally followed by its unit (``1.25E-11 A``).
_INFO = re.compile(r"([-+]?[0-9]*\.?[0-9]+(?:[Ee][-+]?[0-9]{1,3})?)\s*([A-Za-z]{0,3})")


def info_value(raw: bytes) -> float | None:
    """The number in a device-information reply (``!GQ``, ``!V``), or ``None`` when there is
    none (``?``, text): device information is best effort and never refuses a connection."""
    text = raw.decode("ascii", "replace").strip()
    if text.endswith(ACK):
        text = text[: -len(ACK)].strip()
    match = _INFO.fullmatch(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if math.isfinite(value) else None


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
    capability = Capability.POLLED
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    write_commands: ClassVar[dict[str, str]] = {
        "set_factor": "select the nuclide by calibration factor (!F<factor>), e.g. 762 for F-18",
        "zero": "autozero the chamber (!Z); its result is read back with !A",
        "background": "background subtraction on or off (!BON / !BOFF): value on|off",
    }
    config: Vik202Config

    def __init__(self, config: Vik202Config, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock, link_factory=link_factory)
        self.checks = ReadoutChecks(config)
        self.factors = {**FACTOR_NUCLIDES, **config.factor_nuclides}
        self._factor: str | None = None

    async def _ask(self, command: bytes) -> bytes:
        return await exchange(self.link, command + CR, CR, self.config.timeout_s)

    async def _query(self, command: bytes, deadline: Deadline | None = None) -> bytes:
        """Send a query and return its value line.

        Answered by ``deadline`` (by default the config's ``timeout_s`` from now). A bare
        ``>OK`` line is an acknowledgement, not the value: it is skipped, and a ``>OK``
        the instrument appended to the value line is cut off (``297 V>OK``).
        """
        link = self.link
        link.discard_input()
        await link.write(command + CR)
        query_deadline = self.poll_deadline(deadline)
        while True:
            remaining = max(0.001, query_deadline.remaining_s())
            line = await link.read_until(CR, remaining)
            text = line.strip(b"\r\n ")
            if text and text != ACK.encode():
                break
        # A later complete value line already buffered is newer (a late reply was read first).
        for extra in link.discard_input().split(CR)[:-1]:
            extra = extra.strip(b"\r\n ")
            if extra and extra != ACK.encode():
                line = extra + CR
        if line.rstrip(b"\r\n ").endswith(ACK.encode()):
            line = line.rstrip(b"\r\n ")[: -len(ACK)] + CR
        return line

    async def connect(self) -> DeviceInfo:
        """Open the port and ask for device information, best effort.

        ``!GV``, ``!GQ``, ``!V`` and ``!GF`` are asked once each; a reply with a unit suffix,
        a ``?``, a ``>OK`` or no reply leaves that item out (listed in ``unanswered``) and
        never fails the connection: acquiring activity does not depend on them. After the
        first query without any reply the rest are not asked (the instrument is busy or does
        not know them), so connecting stays short.
        """
        await self.open()
        extra: dict[str, Any] = {}
        unanswered: list[str] = []
        version: str | None = None
        silent = False
        for command in (b"!GV", b"!GQ", b"!V", b"!GF"):
            name = command.decode()
            if silent:
                unanswered.append(name)
                continue
            try:
                raw = await self._query(command)
            except ReadTimeout:
                silent = True
                unanswered.append(name)
                continue
            except ProtocolError:
                unanswered.append(name)
                continue
            text = raw.decode("ascii", "replace").strip()
            if command == b"!GV":
                version = text if text and text != "?" else None
                if version is None:
                    unanswered.append(name)
                continue
            if command == b"!GF":
                try:
                    self._factor = factor_text(parse_number(raw))
                    extra["cal_factor"] = self._factor
                except ProtocolError:
                    unanswered.append(name)
                continue
            value = info_value(raw)
            if value is None:
                unanswered.append(name)
            else:
                extra["chamber_current_a" if command == b"!GQ" else "hv_battery_v"] = value
        if unanswered:
            extra["unanswered"] = ",".join(unanswered)
        return DeviceInfo(model="Comecer VIK-202", firmware=version, extra=extra)

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        channel = self.config.channel
        # Both queries of the poll share the supervisor's one deadline.
        deadline = self.poll_deadline(deadline)
        try:
            if self.config.read_factor or self._factor is None:
                try:
                    self._factor = factor_text(parse_number(await self._query(b"!GF", deadline)))
                except ProtocolError:
                    pass  # the factor keeps its last known value; the activity still counts
            raw = await self._query(b"!R", deadline)
            acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
            nuclide = None if self._factor is None else self.factors.get(self._factor)
            reading = self.activity_reading(
                channel,
                reply_figure(raw),
                "Bq",
                nuclide=nuclide,
                raw=raw,
                acq_ns=acq_ns,
                mono_ns=mono_ns,
                cal=self._factor,
                # The instrument shows a factor; the name comes from the factor table.
                nuclide_shown=False,
            )
        except ProtocolError as exc:
            exc.channel = channel
            raise
        return [self.checks(reading)]

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
