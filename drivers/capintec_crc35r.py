"""Capintec CRC-35R dose calibrator: framed, polled, up to 8 chambers.

Protocol facts (docs/instruments.md, Capintec CRC-35R): 4800 8N1. A request is STX (0x02), a
length byte ``'A'`` + number of command characters, the command, a checksum, ETX (0x03);
checksum = ((STX + length byte + sum of the command bytes) AND 0x7F) + 0x21. Worked example:
``R1`` (read chamber 1) is ``02 43 52 31 69 03``. The reply, read up to ETX, carries
``DRx,<nuclide or calibration number, space-padded>,<activity, 6 characters><unit code>``;
unit codes 3/4/5 = kBq/MBq/GBq; a division in a calibration number reads as ``&``.
``I1<nuclide padded to 6>`` sets the nuclide (a privileged write).

Unverified: that the reply is framed and checksummed like the request (the driver checks the
frame that way, so a corrupted reply is caught); the acknowledgement text of ``I<n>``; and
``I<n>`` for chambers other than 1 (docs/instruments.md shows ``I1`` only).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from daq.clock import Clock
from daq.config.base import SerialSettings
from daq.errors import DriverError, ProtocolError, ReadTimeout
from daq.model import SERIES_ATTRS, DeviceInfo, Quality, Reading, Reason
from daq.transport import LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver
from drivers.line import CalibratorInstrument, ReadoutChecks, display_figure, exchange

STX = 0x02
ETX = 0x03

#: Unit codes of the ``DR`` reply (docs/instruments.md, Capintec CRC-35R: 3/4/5 = kBq/MBq/GBq).
UNIT_CODES: dict[str, str] = {"3": "kBq", "4": "MBq", "5": "GBq"}

_REPLY = re.compile(r"^DR([1-8]),([^,]{1,16}),(.{6})([0-9])$", re.DOTALL)


def checksum(length_byte: int, command: bytes) -> int:
    """((STX + length byte + sum of the command bytes) AND 0x7F) + 0x21."""
    return ((STX + length_byte + sum(command)) & 0x7F) + 0x21


def frame(command: bytes) -> bytes:
    """Frame ``command`` as STX, length, command, checksum, ETX."""
    length = ord("A") + len(command)
    if length > 0xFF:
        raise ValueError("command too long for one frame")
    return bytes([STX, length]) + command + bytes([checksum(length, command), ETX])


def unframe(raw: bytes) -> bytes:
    """Check a frame's STX, length, checksum and ETX and return its payload.

    Raises :class:`ProtocolError` carrying ``raw`` for anything else; never another error.
    """
    start = raw.rfind(bytes([STX]))
    if start < 0 or len(raw) - start < 4:
        raise ProtocolError("no STX-framed reply", raw=raw)
    body = raw[start:]
    if body[-1] != ETX:
        raise ProtocolError("reply does not end with ETX", raw=raw)
    length, payload, got = body[1], body[2:-2], body[-2]
    if length - ord("A") != len(payload):
        raise ProtocolError(
            f"length byte says {length - ord('A')} characters, frame has {len(payload)}", raw=raw
        )
    want = checksum(length, payload)
    if got != want:
        raise ProtocolError(f"checksum 0x{got:02x}, expected 0x{want:02x}", raw=raw)
    return payload


def parse_reply(raw: bytes) -> tuple[int, str, str, str]:
    """Parse a ``DR`` reply frame into ``(chamber, setting, figure, unit)``.

    ``setting`` is the nuclide or calibration number as shown (``&`` kept: it is data);
    ``figure`` the six-character activity field stripped of its padding, a displayed figure
    (:func:`~drivers.line.display_figure`). Raises :class:`ProtocolError` carrying ``raw``.
    """
    payload = unframe(raw)
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("reply is not ASCII", raw=raw) from exc
    match = _REPLY.match(text)
    if match is None:
        raise ProtocolError("expected 'DRx,<nuclide>,<activity><unit code>'", raw=raw)
    chamber, setting, number, code = match.groups()
    if code not in UNIT_CODES:
        raise ProtocolError(f"unknown unit code {code!r}", raw=raw)
    return int(chamber), setting.strip(), display_figure(number, raw), UNIT_CODES[code]


def names_nuclide(setting: str) -> bool:
    """A setting with a letter names a nuclide (``Tc99m``); digits and ``&`` are a
    calibration number, which names none."""
    return any(c.isalpha() for c in setting)


class Crc35rConfig(CalibratorInstrument):
    kind: Literal["capintec-crc35r"]
    #: Chambers to read each poll, 1 to 8; channel names are ``chamber<n>``.
    chambers: Annotated[list[Annotated[int, Field(ge=1, le=8)]], Field(min_length=1, max_length=8)] = Field(
        default_factory=lambda: [1]
    )

    @field_validator("chambers")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("chambers must not repeat")
        return value


class Crc35rDriver(SerialDriver):
    kind = "capintec-crc35r"
    config_model = Crc35rConfig
    capability = Capability.POLLED
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=4800, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    write_commands: ClassVar[dict[str, str]] = {
        "set_nuclide": "select the nuclide: value 'NUCLIDE' (chamber 1) or 'CHAMBER:NUCLIDE'",
    }
    config: Crc35rConfig

    def __init__(self, config: Crc35rConfig, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock, link_factory=link_factory)
        self.checks = ReadoutChecks(config)
        #: Each chamber's series attributes (its nuclide) from its last reading, which a BAD
        #: record of that chamber carries too, so it lands in the series it interrupts.
        self._series: dict[str, dict[str, object]] = {}

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(
            model="Capintec CRC-35R", extra={"chambers": ",".join(map(str, self.config.chambers))}
        )

    def channels(self) -> list[tuple[str, str]]:
        return [(f"chamber{n}", "Bq") for n in self.config.chambers]

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        """One poll: every configured chamber gets exactly one reading, GOOD or BAD.

        A bad reply on one chamber (checksum, length byte, unknown unit code, a reply for
        another chamber, an unparsable figure) becomes that chamber's BAD ``parse_error``
        reading with the raw bytes and the reason; a chamber that does not answer in time
        gets a BAD ``timeout`` reading. The other chambers are still asked, each within a fair
        share of what is left of the poll's ``deadline`` (the driver keeps a tenth of it to
        hand back what it read). When no
        chamber answers at all, :class:`ReadTimeout` is raised (the link is in doubt); a lost
        link ends the poll (the supervisor records it for every chamber).
        """
        out: list[Reading] = []
        poll_deadline = self.poll_deadline(deadline)
        timeout_s = poll_deadline.remaining_s()
        end = self.clock.monotonic_ns() + int(poll_deadline.remaining_ns() * 0.9)
        answered = 0
        chambers = self.config.chambers
        for i, n in enumerate(chambers):
            channel = f"chamber{n}"
            raw = b""
            # A fair share of what is left, so a silent chamber cannot starve those after it.
            remaining = (end - self.clock.monotonic_ns()) / 1e9 / (len(chambers) - i)
            if remaining <= 0:
                out.append(self._bad(channel, Reason.TIMEOUT, "not asked: the poll's time was spent", None))
                continue
            try:
                raw = await exchange(self.link, frame(b"R%d" % n), bytes([ETX]), remaining)
                answered += 1
                acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
                chamber, setting, figure, unit = parse_reply(raw)
                if chamber != n:
                    raise ProtocolError(f"asked for chamber {n}, reply is for chamber {chamber}", raw=raw)
                reading = self.activity_reading(
                    channel,
                    figure,
                    unit,
                    # A calibration number (digits, "&" for a division) names no nuclide.
                    nuclide=setting if names_nuclide(setting) else None,
                    raw=raw,
                    acq_ns=acq_ns,
                    mono_ns=mono_ns,
                    cal=setting,
                )
            except ReadTimeout:
                out.append(self._bad(channel, Reason.TIMEOUT, f"no reply within {remaining:.3g} s", None))
                continue
            except ProtocolError as exc:
                if not raw:  # too many bytes without ETX: the chamber answered, with garbage
                    answered += 1
                out.append(self._bad(channel, Reason.PARSE_ERROR, exc.reason, exc.raw or raw))
                continue
            attrs = reading.attrs or {}
            self._series[channel] = {k: attrs[k] for k in SERIES_ATTRS if attrs.get(k) is not None}
            out.append(self.checks(reading))
        if not answered:
            raise ReadTimeout(f"{self.name}: no chamber answered within {timeout_s:.3g} s")
        return out

    def _bad(self, channel: str, reason: str, message: str, raw: bytes | None) -> Reading:
        """A chamber's BAD record of this poll, in the chamber's series (its last nuclide)."""
        return self.reading(
            channel,
            None,
            "Bq",
            quality=Quality.BAD,
            reason=reason,
            raw=raw,
            attrs={**self._series.get(channel, {}), "error": message[:500]},
        )

    async def write(self, command: str, value: str | None = None) -> str:
        self.check_write(command)
        chamber_text, sep, name = (value or "").rpartition(":")
        chamber = int(chamber_text) if sep and chamber_text.isdigit() else 1
        name = name.strip()
        if not name or len(name) > 6 or not name.isascii() or chamber not in range(1, 9):
            raise DriverError(
                f"{self.name}: set_nuclide needs 'NUCLIDE' or 'CHAMBER:NUCLIDE' (<= 6 characters)"
            )
        request = frame(f"I{chamber}{name:<6}".encode("ascii"))
        raw = await exchange(self.link, request, bytes([ETX]), self.config.timeout_s)
        return unframe(raw).decode("ascii", "replace")
