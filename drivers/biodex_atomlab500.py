"""Biodex Atomlab 500 dose calibrator: CR-terminated ASCII commands, polled.

Protocol facts (docs/instruments.md, Biodex Atomlab 500): 19200 8N1 over a null-modem cable;
commands are at most 7 letters ended by CR, a parameter follows a space or comma; replies end
CR LF. ``^C`` (0x03) or ``1`` returns the current activity; ``ISO`` changes the isotope. The
manual warns that remote setting commands can corrupt a measurement in progress at the
console, so the driver only queries unless ``allow_writes`` is set.

Unverified: the text of the activity reply. The default pattern expects
``<isotope> <activity> <unit>`` (for example ``Tc99m 12.34 mCi``); ``reply_pattern`` takes a
regular expression with the groups ``activity``, ``unit`` and optionally ``nuclide`` so a
site can match its firmware without code changes.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from daq.clock import Clock
from daq.config.base import SerialSettings
from daq.errors import DriverError, ProtocolError
from daq.model import DeviceInfo, Reading
from daq.transport import LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver
from drivers.line import CalibratorInstrument, LineConfig, LineParser, ReadoutChecks, exchange

#: ``<isotope> <activity> <unit>``, the activity a displayed figure (digits, optionally a
#: point and digits): a reply that lost a byte (``Tc99m .34 mCi``) does not match.
DEFAULT_REPLY = (
    r"^\s*(?P<nuclide>[A-Za-z0-9-]{1,8})\s+(?P<activity>-?[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-zµ]{1,4})\s*$"
)

#: Spellings of the activity query (docs/instruments.md, Biodex Atomlab 500: ``^C`` or ``1``).
QUERIES: dict[str, bytes] = {"1": b"1\r", "^C": b"\x03"}


class Atomlab500Config(CalibratorInstrument):
    kind: Literal["biodex-atomlab500"]
    channel: str = "activity"
    #: ``1`` (sent as ``1`` CR) or ``^C`` (the single byte 0x03).
    query: Literal["1", "^C"] = "1"
    reply_pattern: Annotated[str, Field(min_length=1)] = DEFAULT_REPLY

    @field_validator("reply_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            groups = re.compile(value).groupindex
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if "activity" not in groups or "unit" not in groups:
            raise ValueError("the pattern needs the named groups (?P<activity>...) and (?P<unit>...)")
        return value


def make_parser(pattern: str = DEFAULT_REPLY) -> LineParser:
    """The reply parser: one CR LF line matched against ``pattern``."""
    return LineParser(LineConfig(name="atomlab", kind="line", port="-", pattern=pattern, terminator="\\r\\n"))


class Atomlab500Driver(SerialDriver):
    kind = "biodex-atomlab500"
    config_model = Atomlab500Config
    capability = Capability.POLLED
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=19200, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    write_commands: ClassVar[dict[str, str]] = {
        "set_nuclide": "change the isotope (ISO <name>); may disturb a measurement at the console",
    }
    config: Atomlab500Config

    def __init__(self, config: Atomlab500Config, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock, link_factory=link_factory)
        self.checks = ReadoutChecks(config)
        self.parser = make_parser(config.reply_pattern)

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(model="Biodex Atomlab 500")

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        cfg = self.config
        timeout_s = self.poll_deadline(deadline).remaining_s()
        raw = await exchange(self.link, QUERIES[cfg.query], b"\r\n", timeout_s)
        acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
        try:
            figure, unit, shown, _ = self.parser.parse(raw)
            reading = self.activity_reading(
                cfg.channel,
                figure,
                unit,
                nuclide=shown,
                raw=raw,
                acq_ns=acq_ns,
                mono_ns=mono_ns,
                # The isotope setting exactly as the instrument showed it.
                cal=shown,
            )
        except ProtocolError as exc:
            exc.channel = cfg.channel
            raise
        return [self.checks(reading)]

    async def write(self, command: str, value: str | None = None) -> str:
        self.check_write(command)
        name = (value or "").strip()
        if not name or not name.isascii() or not name.replace("-", "").isalnum():
            raise DriverError(f"{self.name}: set_nuclide needs an isotope name")
        raw = await exchange(self.link, f"ISO {name}\r".encode("ascii"), b"\r\n", self.config.timeout_s)
        return raw.decode("ascii", "replace").strip()
