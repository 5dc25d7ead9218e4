"""Building blocks of the configuration, shared by the core and the drivers.

Durations end in ``_s``; units stay in names. Unknown keys are rejected everywhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
PositiveSeconds = Annotated[float, Field(gt=0)]


class StrictModel(BaseModel):
    """Rejects unknown keys; immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    period_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 0.5
    connect_timeout_s: PositiveSeconds = 5.0
    backoff_initial_s: PositiveSeconds = 0.2
    backoff_cap_s: PositiveSeconds = 5.0
    max_consecutive_timeouts: Annotated[int, Field(ge=1)] = 3
    #: State-changing commands (set nuclide, zero, writes to registers) stay refused unless true.
    allow_writes: bool = False

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
