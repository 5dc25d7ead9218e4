"""The driver contract.

A driver speaks to one instrument and turns frames into :class:`~daq.model.Reading` s.
It never sleeps, retries, reconnects or stores: the supervisor owns all of that.

- :attr:`Driver.capability` is declared per instance (it may depend on the config):
  ``POLLED`` (the supervisor calls ``read(deadline)`` on its poll grid), ``STREAMING`` (the
  instrument talks by itself) or ``SUBSCRIPTION`` (a server pushes notifications); the
  supervisor's loop, staggering and timeout policy follow it.
- ``connect()`` opens the link and returns :class:`~daq.model.DeviceInfo`; idempotent.
- ``read(deadline)`` for a polled driver is one poll, all or nothing, to be finished by the
  :class:`Deadline` the supervisor passes (every request of the poll shares that one time
  budget; the driver keeps no budget of its own); for a streaming or subscription driver it
  waits for the next frame(s). It raises :class:`~daq.errors.ProtocolError` for a frame
  that does not parse (the link stays usable), :class:`~daq.errors.DeviceError` for an
  error reported by the instrument, :class:`~daq.errors.ReadTimeout` and
  :class:`~daq.errors.ConnectError` when the link is in doubt.
- A streaming or subscription driver declares how long its instrument may stay silent:
  :meth:`Driver.silence_limit_s` (measured from the last time ``read()`` returned; ``None``
  while silence is normal, as for an idle scanner). The supervisor owns that timer: it bounds
  each wait with it, turns a silence into the same ``timeout`` gap and reconnect for every
  driver (asking :meth:`Driver.silenced` for the reason), and gives a fresh window when the
  process, not the instrument, stood still. ``read()`` itself waits without a timer, returns
  ``[]`` when the instrument spoke without a value (a keep-alive, a blank line), and may be
  cancelled while waiting without losing anything. A driver whose limit changes while the
  supervisor waits (a scan starts) calls :meth:`Driver.cadence_changed`.
- Periodic requests beside the polls or the stream (nodes to resolve again, nodes read on a
  grid in a subscription) are :class:`Duty` s listed by :meth:`Driver.duties`; the supervisor
  runs them on its own grid with their deadline, stores what they return and treats their
  errors like a read's. A driver keeps no timer of its own.
- ``close()`` is idempotent and never raises.
- ``channels()`` lists ``(channel, unit)`` pairs known in advance, so the supervisor can
  write a BAD record for each during a gap.
- ``write(command, value)`` performs one state-changing command (set nuclide, zero,
  write a register). Drivers that support none keep the default, which refuses. The daemon
  checks ``allow_writes`` and audits every attempt before calling it
  (:meth:`daq.daemon.Daemon.instrument_write`); drivers check it again.
- A serial driver opens its link through ``link_factory`` (:func:`daq.transport.open_link`
  unless a test injects another, such as one end of :func:`daq.transport.null_modem`).
- A driver built on a protocol library maps that library's exceptions to the project's in one
  ``map_exceptions`` context manager of its package, not at each call site.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from daq.clock import Clock
from daq.config.base import InstrumentBase, SerialInstrument, SerialSettings
from daq.errors import ConnectError, ProtocolError, WriteRefused
from daq.model import DeviceInfo, Quality, Reading
from daq.physics import canonical_nuclide, to_bq
from daq.transport import Link, LinkFactory, open_link

#: ``activity_reading(cal=...)`` left out: the protocol has no calibration setting.
_NO_CAL: Any = object()


class Capability(enum.Enum):
    """How a driver instance acquires; the supervisor runs the matching loop."""

    #: One request/answer exchange per poll, on the supervisor's grid, within its deadline.
    POLLED = "polled"
    #: The instrument sends by itself; ``read()`` waits for the next frame.
    STREAMING = "streaming"
    #: The server pushes notifications of a subscription; ``read()`` returns the next batch.
    SUBSCRIPTION = "subscription"


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """The moment, on ``clock``'s monotonic time, by which one poll must be finished.

    The supervisor makes one per poll (its ``timeout_s`` from the poll's start) and owns the
    timeout that enforces it; a driver sizes each request from :meth:`remaining_s`, so all
    requests of the poll share one budget that starts when the supervisor's does."""

    mono_ns: int
    clock: Clock

    @classmethod
    def after(cls, clock: Clock, seconds: float) -> Deadline:
        return cls(clock.monotonic_ns() + int(seconds * 1e9), clock)

    def remaining_ns(self) -> int:
        return max(0, self.mono_ns - self.clock.monotonic_ns())

    def remaining_s(self) -> float:
        return self.remaining_ns() / 1e9


@dataclasses.dataclass(frozen=True, slots=True)
class Duty:
    """A request the supervisor makes of a driver on its own grid, beside polls or the stream.

    ``call(deadline)`` returns readings to store (BAD records of what it found unavailable);
    it is due ``first_s`` after connect, then every ``every_s`` on a fixed grid (slots that
    passed while something else ran are skipped), and must finish within ``timeout_s``."""

    name: str
    every_s: float
    timeout_s: float
    call: Callable[[Deadline], Awaitable[list[Reading]]]
    first_s: float = 0.0


class Driver(abc.ABC):
    """Base class of every driver; see the module docstring for the contract."""

    #: The ``kind`` value in config that selects this driver.
    kind: ClassVar[str]
    #: The pydantic model of this driver's ``[[instruments]]`` table.
    config_model: ClassVar[type[InstrumentBase]]
    #: How this instance acquires. A class sets its usual one; an instance whose config
    #: changes it (a ``line`` instrument with a ``poll_command``) sets its own in ``__init__``.
    capability: Capability = Capability.POLLED

    def __init__(self, config: InstrumentBase, clock: Clock):
        self.config = config
        self.name = config.name
        self.clock = clock
        #: Set by the supervisor that owns this driver: called by :meth:`cadence_changed`.
        self.on_cadence_change: Callable[[], None] | None = None

    @property
    def streaming(self) -> bool:
        """True when the instrument (or server) talks by itself: not polled."""
        return self.capability is not Capability.POLLED

    def poll_deadline(self, deadline: Deadline | None) -> Deadline:
        """``deadline``, or for a call outside a supervisor (a test, a one-off command) the
        config's ``timeout_s`` from now."""
        return deadline if deadline is not None else Deadline.after(self.clock, self.config.timeout_s)

    def silence_limit_s(self) -> float | None:
        """How long the instrument may stay silent (``read()`` not returning), from the last
        time ``read()`` returned, before the link counts as lost; ``None``: no limit. Asked
        before every wait of a streaming or subscription driver; polled drivers have their
        deadline instead."""
        return None

    def silenced(self, silent_s: float) -> str:
        """The supervisor found the instrument silent for ``silent_s``: end what the silence
        interrupts and return the reason for the gap record (the link is then reconnected)."""
        return f"{self.name}: nothing received for {silent_s:g} s"

    def cadence_changed(self) -> None:
        """Tell the supervisor that :meth:`silence_limit_s` changed (a scan started): it asks
        again, counting the silence from now."""
        if self.on_cadence_change is not None:
            self.on_cadence_change()

    def duties(self) -> list[Duty]:
        """The periodic requests the supervisor makes of this driver while connected."""
        return []

    @abc.abstractmethod
    async def connect(self) -> DeviceInfo: ...

    @abc.abstractmethod
    async def read(self, deadline: Deadline | None = None) -> list[Reading]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def channels(self) -> list[tuple[str, str]]:
        return []

    def problems(self) -> dict[str, dict[str, Any]]:
        """Lasting conditions no single reading shows, for status: kind -> {channel: detail}
        (channels never read because the poll's time ran out, addresses or nodes the server
        refuses). Each is logged once when it starts; empty when there is none."""
        return {}

    #: Commands :meth:`write` accepts, with a one-line description each.
    write_commands: ClassVar[dict[str, str]] = {}

    async def write(self, command: str, value: str | None = None) -> str:
        """Send one state-changing command; returns the instrument's answer as text.

        Raises :class:`~daq.errors.WriteRefused` unless ``allow_writes`` is set and the
        command is one of :attr:`write_commands`.
        """
        self.check_write(command)
        raise WriteRefused(f"{self.name}: {self.kind} has no command {command!r}")

    def check_write(self, command: str) -> None:
        if not self.config.allow_writes:
            raise WriteRefused(f"{self.name}: writes are disabled (set allow_writes = true to enable)")
        if command not in self.write_commands:
            known = ", ".join(self.write_commands) or "none"
            raise WriteRefused(f"{self.name}: unknown command {command!r}; known: {known}")

    def reading(
        self,
        channel: str,
        value: float | None,
        unit: str,
        *,
        quality: Quality = Quality.GOOD,
        reason: str | None = None,
        raw: bytes | None = None,
        device_ns: int | None = None,
        attrs: Mapping[str, Any] | None = None,
        acq_ns: int | None = None,
        mono_ns: int | None = None,
    ) -> Reading:
        """A reading stamped now (or at the given arrival time)."""
        # Positional, in the order of Reading's fields: every reading of every driver but
        # Modbus is made here, and a keyword call costs about a third more (measured).
        return Reading(
            self.name,
            channel,
            None if value is None else float(value),
            unit,
            quality,
            self.clock.time_ns() if acq_ns is None else acq_ns,
            self.clock.monotonic_ns() if mono_ns is None else mono_ns,
            reason,
            device_ns,
            raw,
            attrs,
        )

    def activity_reading(
        self,
        channel: str,
        figure: str,
        unit: str,
        *,
        nuclide: str | None,
        raw: bytes,
        acq_ns: int,
        mono_ns: int,
        device_ns: int | None = None,
        cal: Any = _NO_CAL,
        nuclide_shown: bool = True,
    ) -> Reading:
        """A dose calibrator's reading, the one way every calibrator driver builds it.

        ``figure`` is the activity exactly as the instrument displayed it (decimal text, as
        checked by :func:`drivers.line.display_figure`) in ``unit``. The value is that figure
        in Bq (SI), converted exactly and rounded once (:func:`daq.physics.to_bq`), so
        ``16.56`` MBq is 16560000.0 Bq. ``attrs`` keeps the instrument's own figure:
        ``reported_text`` (the text, trailing zeros included), ``reported_value`` (the same
        as a number) and ``reported_unit``; ``nuclide`` in the nuclide table's spelling
        (``Tc-99m``; a name the table lacks is kept as given) and, when ``nuclide_shown``, the
        instrument's own spelling as ``nuclide_shown`` (``Tc99m``); and, where the protocol has
        one, the calibration setting exactly as shown (``cal``).
        Raises :class:`~daq.errors.ProtocolError` (with ``raw``) for a figure out of range.
        """
        try:
            value_bq = to_bq(figure, unit)
        except ValueError as exc:
            raise ProtocolError(f"activity {figure!r} {unit}: {exc}", raw=raw, channel=channel) from None
        name = None if nuclide is None or not nuclide.strip() else nuclide.strip()
        attrs: dict[str, Any] = {
            "nuclide": None if name is None else canonical_nuclide(name),
            "reported_value": float(figure),
            "reported_text": figure,
            "reported_unit": unit,
        }
        if nuclide_shown and name is not None:
            attrs["nuclide_shown"] = name
        if cal is not _NO_CAL:
            attrs["cal"] = cal
        return self.reading(
            channel,
            value_bq,
            "Bq",
            raw=raw,
            acq_ns=acq_ns,
            mono_ns=mono_ns,
            device_ns=device_ns,
            attrs=attrs,
        )


class SerialDriver(Driver):
    """A driver on a :class:`~daq.transport.Link`, with its model's default line settings."""

    #: The instrument's factory line settings (from its manual); config may override each.
    default_serial: ClassVar[SerialSettings] = SerialSettings(
        baudrate=9600, bytesize=8, parity="N", stopbits=1, rtscts=False, xonxoff=False
    )
    config: SerialInstrument

    def __init__(self, config: SerialInstrument, clock: Clock, *, link_factory: LinkFactory = open_link):
        super().__init__(config, clock)
        #: Opens the link (``open_link`` by default); a test passes an in-memory one.
        self.link_factory = link_factory
        self._link: Link | None = None

    def line_settings(self) -> dict[str, Any]:
        merged = self.default_serial.model_dump()
        merged.update({k: v for k, v in self.config.serial.model_dump().items() if v is not None})
        return merged

    def silenced(self, silent_s: float) -> str:
        return f"{self.name}: no line for {silent_s:g} s"

    async def open(self) -> Link:
        if self._link is None:
            self._link = await self.link_factory(self.config.port, **self.line_settings())
        return self._link

    @property
    def link(self) -> Link:
        if self._link is None:
            raise ConnectError(f"{self.name}: not connected")
        return self._link

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()
