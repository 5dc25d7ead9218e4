"""A configurable line/regex driver, kind ``line``, for calibrators whose manuals a site supplies.

Some calibrators (Capintec CRC-25R/55tR, PTW Curiementor) have protocols that are not public
(docs/instruments.md, "The `line` driver": not to be assumed to match the CRC-35R). Until a
site confirms one, this driver covers them from config: an optional poll command, a terminator,
an encoding, and a regular expression with named groups ``activity`` (required), ``unit``,
``nuclide`` and ``device_time``. Without ``poll_command`` it listens for lines the instrument
sends by itself.

It also holds :func:`exchange`, the request/reply step the polled calibrator drivers share.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from daq.clock import Clock
from daq.config.base import Count, PositiveSeconds, SerialInstrument, SerialSettings
from daq.errors import ProtocolError
from daq.model import DeviceInfo, Quality, Reading, Reason
from daq.physics import UnknownNuclide, UnknownUnit, canonical_unit, decay_between, nuclide
from daq.transport import Link, LinkFactory, open_link
from drivers.base import Capability, Deadline, SerialDriver


async def exchange(link: Link, request: bytes, terminator: bytes, timeout_s: float) -> bytes:
    """Send ``request`` and return the reply frame (up to and including ``terminator``).

    A late reply to an earlier request is dropped before sending. If a later complete frame
    is already buffered behind the one read (a merged frame), the newest one is returned, so
    a stale value is never stamped with the current time.
    """
    link.discard_input()
    await link.write(request)
    frame = await link.read_until(terminator, timeout_s)
    extra = link.discard_input()
    if terminator in extra:
        complete = extra[: extra.rindex(terminator) + len(terminator)]
        parts = complete.split(terminator)[:-1]
        if parts:
            frame = parts[-1] + terminator
    return frame


#: A displayed figure: digits, optionally a point and more digits (``7.403``, ``16.560``,
#: ``740``), optionally negative (a background-subtracted reading near zero). No exponent and
#: no bare point: ``.403`` is what a dropped byte leaves of ``7.403``, not a figure.
_FIGURE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
#: The same with an optional exponent, for protocols that print one (``1.5E+10``).
_FIGURE_EXP = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?(?:[Ee][-+]?[0-9]{1,3})?")

#: Reason of a reading far from what the previous one predicts (see :class:`JumpWatch`).
IMPLAUSIBLE_JUMP = "implausible_jump"


def display_figure(text: str, raw: bytes, *, exponent: bool = False) -> str:
    """``text`` stripped, checked to be a figure as a calibrator displays it.

    Raises :class:`ProtocolError` (carrying ``raw``) otherwise: a line without a checksum
    that lost a byte (``.403`` for ``7.403``) must be refused, not stored as a value.
    """
    shown = text.strip()
    pattern = _FIGURE_EXP if exponent else _FIGURE
    if pattern.fullmatch(shown) is None:
        what = "digits with an optional decimal point" + (" and exponent" if exponent else "")
        raise ProtocolError(f"activity {shown[:40]!r} is not a displayed figure ({what})", raw=raw)
    return shown


def known_nuclide(text: str) -> str | None:
    """The table's symbol for ``text``, or ``None`` when it names no known nuclide."""
    try:
        return nuclide(text.strip()).symbol
    except UnknownNuclide:
        return None


def _unescape(text: str) -> str:
    # Config files spell control characters as in C: "\r\n", "\x03".
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


class CalibratorInstrument(SerialInstrument):
    """Fields every dose-calibrator driver shares.

    ``stale_repeats``: after this many identical reported values in a row the readout is
    taken as frozen and further identical readings are UNCERTAIN with the reason ``stale``
    (0 = off). A live chamber's noise and the decay change the last digit; a long-lived
    nuclide on a coarse display may not, so it is off unless a site turns it on.

    ``jump_factor``: a reading more than this factor above or below the decay-predicted
    value of the channel's previous reading (same nuclide and setting) is UNCERTAIN with the
    reason ``implausible_jump``; its value is kept. ``jump_floor_bq``: when both figures are
    below it (an empty chamber's background) they are not compared.
    """

    stale_repeats: Count = 0
    jump_factor: Annotated[float, Field(ge=1.5, le=1000.0)] = 5.0
    jump_floor_bq: Annotated[float, Field(ge=0.0, le=1e12)] = 1e5


class StaleWatch:
    """Marks a channel's readings UNCERTAIN/``stale`` once its reported value stops changing."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        self._last: dict[str, tuple[object, int]] = {}

    def __call__(self, reading: Reading) -> Reading:
        if not self.repeats or reading.attrs is None:
            return reading
        shown = (reading.attrs.get("reported_text"), reading.attrs.get("reported_unit"))
        last, count = self._last.get(reading.channel, (None, 0))
        count = count + 1 if shown == last else 1
        self._last[reading.channel] = (shown, count)
        if count > self.repeats and reading.quality is Quality.GOOD:
            return dataclasses.replace(
                reading,
                quality=Quality.UNCERTAIN,
                reason=Reason.STALE,
                attrs={**reading.attrs, "unchanged_polls": count},
            )
        return reading


class JumpWatch:
    """Marks UNCERTAIN/``implausible_jump`` a reading that departs from the decay-predicted
    value of the previous reading of the same channel by more than ``factor``.

    A protocol without a checksum can lose a digit and still parse (``743`` for ``7403``);
    the decay law says what the next reading of the same vial can be. The first reading
    after a vial is changed is flagged too: the flag asks for a look, the value is kept.
    Readings with another nuclide or calibration setting than the previous one start afresh.
    """

    def __init__(self, factor: float, floor_bq: float):
        self.factor = factor
        self.floor_bq = floor_bq
        self._last: dict[str, tuple[float, int, object, object]] = {}

    def __call__(self, reading: Reading) -> Reading:
        attrs = reading.attrs or {}
        value = reading.value
        if value is None or reading.quality is Quality.BAD:
            return reading
        setting = (attrs.get("nuclide"), attrs.get("cal"))
        last = self._last.get(reading.channel)
        self._last[reading.channel] = (value, reading.acq_ns, *setting)
        if last is None or (last[2], last[3]) != setting:
            return reading
        predicted = last[0]
        if isinstance(setting[0], str):
            try:
                predicted = decay_between(last[0], setting[0], last[1], reading.acq_ns)
            except UnknownNuclide:
                pass
        if max(abs(predicted), abs(value)) < self.floor_bq:
            return reading
        if predicted > 0 and value > 0 and max(value / predicted, predicted / value) <= self.factor:
            return reading
        if reading.quality is not Quality.GOOD:
            return reading
        return dataclasses.replace(
            reading,
            quality=Quality.UNCERTAIN,
            reason=IMPLAUSIBLE_JUMP,
            attrs={**attrs, "predicted_bq": float(f"{predicted:.6g}"), "jump_factor": self.factor},
        )


class ReadoutChecks:
    """The checks every calibrator driver runs on its own readings, in order: an implausible
    jump (:class:`JumpWatch`), then a frozen readout (:class:`StaleWatch`)."""

    def __init__(self, config: CalibratorInstrument):
        self.jump = JumpWatch(config.jump_factor, config.jump_floor_bq)
        self.stale = StaleWatch(config.stale_repeats)

    def __call__(self, reading: Reading) -> Reading:
        return self.stale(self.jump(reading))


class LineConfig(CalibratorInstrument):
    """A line-oriented calibrator described entirely by config.

    ``pattern`` is a Python regular expression matched against each line (terminator
    stripped); it must have a group ``activity`` and may have ``unit``, ``nuclide`` and
    ``device_time``. ``unit``/``nuclide`` give the value when the line does not carry it.
    ``device_time_format`` is a ``strptime`` format; naive times are in ``device_tz``.
    """

    kind: Literal["line"]
    channel: str = "activity"
    model: str = "line calibrator"
    pattern: Annotated[str, Field(min_length=1)]
    poll_command: str | None = None
    terminator: str = "\\r\\n"
    command_terminator: str = "\\r"
    encoding: str = "ascii"
    unit: str | None = None
    nuclide: str | None = None
    device_time_format: str | None = None
    device_tz: str = "UTC"
    #: Silence longer than this is treated as a lost link (listening mode only; the
    #: supervisor times it).
    stale_after_s: PositiveSeconds = 10.0

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if "activity" not in compiled.groupindex:
            raise ValueError("the pattern needs a named group (?P<activity>...)")
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("unit")
    @classmethod
    def _check_unit(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return canonical_unit(value)
        except UnknownUnit as exc:
            raise ValueError(str(exc)) from None

    @field_validator("device_tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check_groups(self) -> LineConfig:
        groups = re.compile(self.pattern).groupindex
        if "unit" not in groups and self.unit is None:
            raise ValueError("the pattern has no (?P<unit>...) group, so 'unit' must be set")
        if "device_time" in groups and self.device_time_format is None:
            raise ValueError("the pattern has a device_time group, so 'device_time_format' must be set")
        if not _unescape(self.terminator):
            raise ValueError("terminator must not be empty")
        return self


class LineParser:
    """Turns one line into ``(activity, unit, nuclide, device_ns)``; only raises ProtocolError."""

    def __init__(self, config: LineConfig):
        self.config = config
        self.regex = re.compile(config.pattern)
        self.terminator = _unescape(config.terminator).encode(config.encoding)
        self.tz = ZoneInfo(config.device_tz)

    def parse(self, raw: bytes) -> tuple[str, str, str | None, int | None]:
        """``(figure, unit, nuclide as shown or configured, device_ns)``; ``figure`` is the
        activity text exactly as it arrived (:func:`display_figure`; an exponent is allowed,
        as a configured pattern may match one)."""
        cfg = self.config
        body = raw[: -len(self.terminator)] if raw.endswith(self.terminator) else raw
        try:
            text = body.decode(cfg.encoding)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"line is not valid {cfg.encoding}", raw=raw) from exc
        match = self.regex.search(text)
        if match is None:
            raise ProtocolError("line does not match the configured pattern", raw=raw)
        groups = match.groupdict()
        figure = display_figure(groups.get("activity") or "", raw, exponent=True)
        unit_text = groups.get("unit") or cfg.unit or ""
        try:
            unit = canonical_unit(unit_text)
        except UnknownUnit as exc:
            raise ProtocolError(str(exc), raw=raw) from None
        found = groups.get("nuclide")
        nuc = found.strip() if found and found.strip() else cfg.nuclide
        device_ns = None
        stamp = groups.get("device_time")
        if stamp is not None and cfg.device_time_format:
            try:
                when = datetime.strptime(stamp.strip(), cfg.device_time_format)  # noqa: DTZ007
            except ValueError:
                raise ProtocolError(f"device time {stamp!r} does not match the format", raw=raw) from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=self.tz)
            device_ns = int(when.timestamp() * 1e9)
        return figure, unit, nuc, device_ns


class LineDriver(SerialDriver):
    """Polled when ``poll_command`` is set, listening otherwise."""

    kind = "line"
    config_model = LineConfig
    capability = Capability.STREAMING
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    config: LineConfig

    def __init__(self, config: LineConfig, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock, link_factory=link_factory)
        self.parser = LineParser(config)
        self.checks = ReadoutChecks(config)
        # Per instance: with a poll_command this instrument is polled (and staggered) like any.
        self.capability = Capability.STREAMING if config.poll_command is None else Capability.POLLED
        self._request = (
            None
            if config.poll_command is None
            else (_unescape(config.poll_command) + _unescape(config.command_terminator)).encode(
                config.encoding
            )
        )

    async def connect(self) -> DeviceInfo:
        await self.open()
        return DeviceInfo(model=self.config.model, extra={"kind": "line"})

    def channels(self) -> list[tuple[str, str]]:
        return [(self.config.channel, "Bq")]

    def silence_limit_s(self) -> float | None:
        return self.config.stale_after_s if self._request is None else None

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        cfg = self.config
        if self._request is None:
            # Listening: the supervisor times the silence (silence_limit_s).
            raw = await self.link.read_until(self.parser.terminator, None)
            if not raw.strip():
                return []
        else:
            timeout_s = self.poll_deadline(deadline).remaining_s()
            raw = await exchange(self.link, self._request, self.parser.terminator, timeout_s)
        acq_ns, mono_ns = self.clock.time_ns(), self.clock.monotonic_ns()
        try:
            figure, unit, nuc, device_ns = self.parser.parse(raw)
            reading = self.activity_reading(
                cfg.channel,
                figure,
                unit,
                nuclide=nuc,
                raw=raw,
                acq_ns=acq_ns,
                mono_ns=mono_ns,
                device_ns=device_ns,
            )
        except ProtocolError as exc:
            exc.channel = cfg.channel
            raise
        return [self.checks(reading)]
