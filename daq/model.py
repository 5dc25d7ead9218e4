"""The reading model shared by drivers, the journal and every consumer.

One :class:`Reading` type carries a value and everything needed to trust it later:
where it came from, when it was *actually* read (wall and monotonic), the instrument's own
time if it gives one, a quality with a reason, the raw frame, and the active run.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


class Quality(enum.IntEnum):
    """Quality of a value, ordered from best to worst."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


#: Quality's members as module constants, for code that runs for every reading. On Python 3.11
#: an enum's metaclass has a ``__getattr__``, which sends every ``Quality.GOOD`` through the
#: slow attribute path: about 140 ns, against 15 ns for a module constant (measured here).
GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


class Reason:
    """Reason codes carried by non-GOOD readings and by events (stable strings: they are data)."""

    DISCONNECTED = "disconnected"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    PARSE_ERROR = "parse_error"
    DEVICE_ERROR = "device_error"
    STALE = "stale"
    OVERFLOW = "overflow"
    SHUTDOWN = "shutdown"
    CLOCK_UNSYNCHRONISED = "clock_unsynchronised"
    DAUGHTERS_NOT_IN_EQUILIBRIUM = "daughters_not_in_equilibrium"
    #: NaN, an infinity or no number at all where a value belongs (see daq.canonical).
    NON_FINITE_VALUE = "non_finite_value"
    #: Poll slots of a polled instrument passed without a poll (a process stall, reads slower
    #: than the period); the span is in attrs (daq.supervisor).
    MISSED_POLLS = "missed_polls"


class EventKind:
    """Kinds of instrument events journaled beside readings."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    PARSE_ERROR = "parse_error"
    DEVICE_ERROR = "device_error"
    OVERFLOW = "overflow"
    STARTED = "started"
    STOPPED = "stopped"
    #: A record the journal could not encode or store, kept in its place (daq.journal).
    REJECTED_RECORD = "rejected_record"
    #: A long-lived task raised (component, exception, message, policy): see daq.supervision.
    TASK_FAILED = "task_failed"
    #: The whole process stood still (SIGSTOP, a long pause of the host): span in detail.
    STALL = "stall"


#: Attributes of a reading that name the series it belongs to downstream (line-protocol tags,
#: see :mod:`daq.forward.lineprotocol`). A gap reading carries those of the readings it
#: interrupts, so that it lands in the same series.
SERIES_ATTRS = ("nuclide",)


@dataclasses.dataclass(slots=True, frozen=True, init=False)
class Reading:
    """One value from one channel of one instrument. Frozen: a change is a new reading
    (``dataclasses.replace``), so no part of the daemon alters a reading another holds.

    ``acq_ns`` is UTC wall time in nanoseconds taken when the value arrived, ``mono_ns`` the
    monotonic clock at the same instant. ``value`` is ``None`` only for BAD readings (a gap).
    ``run_id`` is set by the ``runs`` stage of the reading pipeline (:mod:`daq.pipeline`),
    never by a driver. ``attrs`` holds protocol specifics (nuclide, the reported value and
    unit, a calibration factor, OPC UA timestamps) as JSON-able scalars.

    A reading is what was read. Its place in the journal is not part of it: the journal id and
    the per-instrument sequence number are given by the group commit that accepts it and
    travel with the committed record (:class:`daq.journal.codec.ReadingRecord`), so accepting
    a reading never copies it.
    """

    instrument: str
    channel: str
    value: float | None
    unit: str
    quality: Quality
    acq_ns: int
    mono_ns: int
    reason: str | None = None
    device_ns: int | None = None
    raw: bytes | None = None
    attrs: Mapping[str, Any] | None = None
    run_id: str | None = None
    #: Set (once) by :mod:`daq.canonical` when it found this reading canonical, so the journal
    #: writer does not check again what the pipeline checked: a cache of a property of the
    #: fields above, not data (never compared, shown or stored; a changed copy starts unset).
    canonical_checked: bool = dataclasses.field(default=False, init=False, compare=False, repr=False)

    # Written out rather than generated: a frozen dataclass's generated __init__ sets each field
    # with object.__setattr__, which made building a reading (every value of every instrument,
    # and again for each change) cost three times a plain one. The new object is filled as a
    # _Filling, a plain class with the same slots (so the stores are ordinary slot stores), and
    # is a Reading again before __init__ returns: no one else can hold it in between. The
    # signature is the fields', in order, with their defaults (tests/test_model.py checks it).
    def __init__(
        self,
        instrument: str,
        channel: str,
        value: float | None,
        unit: str,
        quality: Quality,
        acq_ns: int,
        mono_ns: int,
        reason: str | None = None,
        device_ns: int | None = None,
        raw: bytes | None = None,
        attrs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        _set_class(self, _Filling)
        s: Any = self
        s.instrument = instrument
        s.channel = channel
        s.value = value
        s.unit = unit
        s.quality = quality
        s.acq_ns = acq_ns
        s.mono_ns = mono_ns
        s.reason = reason
        s.device_ns = device_ns
        s.raw = raw
        s.attrs = attrs
        s.run_id = run_id
        s.canonical_checked = False
        _set_class(self, Reading)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # __init__ turns the object back into a Reading, not into a subclass.
        raise TypeError("Reading is final: wrap it, do not subclass it")

    @property
    def acquired_at(self) -> datetime:
        return datetime.fromtimestamp(self.acq_ns / 1e9, tz=UTC)

    def with_run_id(self, run_id: str | None) -> Reading:
        """This reading attributed to ``run_id``: ``dataclasses.replace(self, run_id=run_id)``,
        built directly because the ``runs`` stage does it for every reading while a run is open.
        A canonical reading stays known canonical when ``run_id`` is ASCII text or ``None``."""
        r = Reading(
            self.instrument, self.channel, self.value, self.unit, self.quality, self.acq_ns,
            self.mono_ns, self.reason, self.device_ns, self.raw, self.attrs, run_id,
        )  # fmt: skip
        if self.canonical_checked and (run_id is None or (type(run_id) is str and run_id.isascii())):
            _set_canonical_checked(r, True)
        return r


class _Filling:
    """A Reading's slots, in the same order, without the frozen ``__setattr__``: what a new
    Reading is while its __init__ fills it (``__class__`` assignment needs this identical layout)."""

    __slots__ = tuple(f.name for f in dataclasses.fields(Reading))


_set_class = vars(object)["__class__"].__set__
# The canonical mark's slot setter (a member descriptor), used by with_run_id and mark_canonical.
_set_canonical_checked = vars(Reading)["canonical_checked"].__set__


def mark_canonical(reading: Reading) -> None:
    """Record that ``reading`` is canonical. Only :mod:`daq.canonical` calls this, after
    checking; the fields it vouches for cannot change (the reading is frozen)."""
    _set_canonical_checked(reading, True)


@dataclasses.dataclass(slots=True)
class InstrumentEvent:
    """A state change or fault of an instrument: connected, disconnected, parse error, overflow."""

    instrument: str
    kind: str
    ts_ns: int
    mono_ns: int
    detail: Mapping[str, Any] | None = None
    raw: bytes | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class DeviceInfo:
    """What the instrument says about itself on connect (kept with runs for traceability)."""

    model: str
    serial: str | None = None
    firmware: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "serial": self.serial,
            "firmware": self.firmware,
            **dict(self.extra),
        }


def is_alarm_channel(channel: str) -> bool:
    """A channel whose non-zero value is an alarm of the instrument itself (``alarm_*``, ``*_alarm``)."""
    return channel.startswith("alarm") or channel.endswith("_alarm")


def iso(ns: int) -> str:
    """ISO 8601 with offset, microsecond precision, for people; storage keeps nanoseconds."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="microseconds")
