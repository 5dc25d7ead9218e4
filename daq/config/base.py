"""Building blocks of the configuration, shared by the core and the drivers.

Durations end in ``_s``; units stay in names. Unknown keys are rejected everywhere.

Every number in a config has a finite, documented range, given by one of the annotated types
below rather than by a ``Field(...)`` repeated at each key (the table is in
``docs/configuration.md``). For every model built on :class:`StrictModel`: ``inf`` and ``nan``
are refused wherever a number is expected, and ``true``/``false`` are never taken for a number
(pydantic would otherwise read ``period_s = true`` as 1 s).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from daq.physics import UnknownNuclide, nuclide

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]

#: One day: the longest period, timeout, back-off or interval any part of the daemon waits.
DAY_S = 86_400.0
#: The longest retention a site may ask for (a century; the journal must still be pruned sometime).
MAX_RETENTION_DAYS = 36_500.0
#: The largest count (queue, batch, buffer) any setting may ask for.
MAX_COUNT = 10_000_000

#: A duration in seconds: finite, above 0, at most one day.
Seconds = Annotated[float, Field(gt=0, le=DAY_S, strict=True)]
#: A duration in seconds that may be 0 (off / no wait), at most one day.
NonNegativeSeconds = Annotated[float, Field(ge=0, le=DAY_S, strict=True)]
#: The name the drivers have always used for :data:`Seconds`.
PositiveSeconds = Seconds
#: A duration in milliseconds (OPC UA's intervals): above 0, at most one day.
Milliseconds = Annotated[float, Field(gt=0, le=DAY_S * 1000, strict=True)]
#: A duration in milliseconds that may be 0 (OPC UA: "as fast as the server can"), at most one day.
NonNegativeMilliseconds = Annotated[float, Field(ge=0, le=DAY_S * 1000, strict=True)]
#: A retention period in days: above 0, at most a century.
Days = Annotated[float, Field(gt=0, le=MAX_RETENTION_DAYS, strict=True)]
#: A count of things (readings, points, polls): 1 to ten million.
PositiveCount = Annotated[int, Field(ge=1, le=MAX_COUNT, strict=True)]
#: A count that may be 0 (off): 0 to ten million.
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
#: A TCP port; 0 picks a free one.
Port = Annotated[int, Field(ge=0, le=65535, strict=True)]
#: Digits after the decimal point a value is shown with (the live page); 0 to 9.
Decimals = Annotated[int, Field(ge=0, le=9, strict=True)]


def _nuclide_symbol(text: str) -> str:
    try:
        return nuclide(text).symbol
    except UnknownNuclide as exc:
        raise ValueError(str(exc)) from None


#: A nuclide of the table, in any spelling it knows (``F18``, ``18F``); stored as the table's symbol.
NuclideName = Annotated[str, AfterValidator(_nuclide_symbol)]


def _is_numeric(annotation: Any) -> bool:
    """Whether ``annotation`` expects numbers somewhere and never a boolean."""
    seen: set[type] = set()

    def walk(tp: Any) -> None:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            walk(typing.get_args(tp)[0])
        elif origin in (typing.Union, types.UnionType) or origin is not None:
            for arg in typing.get_args(tp):
                walk(arg)
        elif isinstance(tp, type):
            seen.add(tp)

    walk(annotation)
    return bool(seen & {int, float}) and bool not in seen


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bool(v) for v in value.values())
    return False


class _BooleanGiven:
    """Stands in for a ``true``/``false`` given where a number is expected, so that the key's
    own validator refuses it (and the error keeps the key path) instead of reading it as 1/0."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"{str(self.value).lower()} (a boolean, not a number)"


def _mark_bools(value: Any) -> Any:
    if isinstance(value, bool):
        return _BooleanGiven(value)
    if isinstance(value, list):
        return [_mark_bools(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_bools(v) for k, v in value.items()}
    return value


class StrictModel(BaseModel):
    """Rejects unknown keys, ``inf``/``nan``, and booleans given for numbers; immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is not None and _holds_bool(value) and _is_numeric(field.annotation):
                out[key] = _mark_bools(value)
        return out


class SerialSettings(StrictModel):
    """Line settings; each driver supplies its model's defaults, any key here overrides them."""

    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] | None = None
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    rtscts: bool | None = None
    xonxoff: bool | None = None


class InstrumentBase(StrictModel):
    """Fields every instrument has.

    ``period_s`` is the poll period of polled instruments (and the grid of a streaming one's
    staleness check); ``timeout_s`` bounds one poll and must be shorter than the period.
    Reconnects back off from ``backoff_initial_s``, doubling up to ``backoff_cap_s``.
    """

    name: Name
    kind: str
    enabled: bool = True
    description: str = ""
    period_s: Seconds = 1.0
    timeout_s: Seconds = 0.5
    connect_timeout_s: Seconds = 5.0
    backoff_initial_s: Seconds = 0.2
    backoff_cap_s: Seconds = 5.0
    max_consecutive_timeouts: Annotated[PositiveCount, Field(le=1000)] = 3
    #: State-changing commands (set nuclide, zero, writes to registers) stay refused unless true.
    allow_writes: bool = False
    #: Digits shown after the decimal point per channel on the live page, e.g.
    #: ``{ activity = 3 }``; a channel not listed gets its unit's default (daq.status).
    decimals: dict[str, Decimals] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_timing(self) -> InstrumentBase:
        if self.timeout_s >= self.period_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s:g}) must be shorter than period_s ({self.period_s:g})"
            )
        if self.backoff_initial_s > self.backoff_cap_s:
            raise ValueError("backoff_initial_s must not exceed backoff_cap_s")
        return self

    def bus(self) -> str | None:
        """The physical port this instrument owns exclusively, for the one-owner check."""
        return None


class SerialInstrument(InstrumentBase):
    """An instrument on a serial line (a device path, ``socket://`` or ``rfc2217://``)."""

    port: Annotated[str, Field(min_length=1)]
    serial: SerialSettings = SerialSettings()

    def bus(self) -> str | None:
        return self.port


class InstrumentsConfig(Protocol):
    """What every feature's cross-check reads of the whole config: its instruments.

    The model of the whole file (:class:`daq.configfile.model.DaqConfig`) is assembled above the
    features from their sections; a feature's check names the sections it reads in a protocol
    extending this one, so it is typed without importing the model.
    """

    @property
    def instruments(self) -> Sequence[InstrumentBase]: ...
