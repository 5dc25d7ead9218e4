"""The ``[alarms]`` config section: limits on channels (see docs/alarms.md)."""

from __future__ import annotations

import itertools
import math
from typing import Literal, Protocol

from pydantic import Field, model_validator

from daq.config.base import InstrumentsConfig, Name, NonNegativeSeconds, StrictModel
from daq.errors import ConfigError

#: Priorities in ISA-18.2's sense, worst first.
Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")

#: Setpoints and deadbands are plain finite numbers in the channel's unit.
_LIMIT = 1e300


class ChannelLimits(StrictModel):
    """Limits on one channel of one instrument. At least one of ``high_high``, ``high``,
    ``low`` and ``low_low`` is given; they are ordered ``low_low < low < high < high_high``."""

    instrument: Name
    channel: Name
    high_high: float | None = Field(default=None, ge=-_LIMIT, le=_LIMIT)
    high: float | None = Field(default=None, ge=-_LIMIT, le=_LIMIT)
    low: float | None = Field(default=None, ge=-_LIMIT, le=_LIMIT)
    low_low: float | None = Field(default=None, ge=-_LIMIT, le=_LIMIT)
    #: A raised alarm clears only once the value is back inside the limit by this much.
    deadband: float = Field(default=0.0, ge=0, le=_LIMIT)
    #: The value must stay beyond the limit this long before the alarm is raised.
    on_delay_s: NonNegativeSeconds = 0.0
    #: The value must stay back inside (past the deadband) this long before the alarm clears.
    off_delay_s: NonNegativeSeconds = 0.0
    severity: Severity = "high"
    #: ``high_high`` and ``low_low`` take this severity (default: ``critical``).
    severity_extreme: Severity = "critical"
    message: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelLimits:
        given = [
            (k, v) for k in ("low_low", "low", "high", "high_high") if (v := getattr(self, k)) is not None
        ]
        if not given:
            raise ValueError("give at least one of high_high, high, low, low_low")
        for (ka, va), (kb, vb) in itertools.pairwise(given):
            if not va < vb:
                raise ValueError(f"{ka} ({va}) must be below {kb} ({vb})")
        for k, v in given:
            if not math.isfinite(v):
                raise ValueError(f"{k} must be a finite number")
        return self


class AlarmsSection(StrictModel):
    """``[alarms]``: ``[[alarms.limits]]`` tables, one per channel."""

    limits: list[ChannelLimits] = Field(default_factory=list)
    #: How many finished alarms ``GET /api/alarms`` keeps in ``recent``.
    recent: int = Field(default=100, ge=0, le=10_000, strict=True)

    @model_validator(mode="after")
    def _unique(self) -> AlarmsSection:
        seen: set[tuple[str, str]] = set()
        for lim in self.limits:
            key = (lim.instrument, lim.channel)
            if key in seen:
                raise ValueError(f"limits for {lim.instrument}/{lim.channel} are given twice; give one table")
            seen.add(key)
        return self


class AlarmsConfig(InstrumentsConfig, Protocol):
    """What :func:`check_config` reads of the whole config."""

    @property
    def alarms(self) -> AlarmsSection: ...


def check_config(model: AlarmsConfig, file: str) -> None:
    """Cross-check: every ``[[alarms.limits]]`` names a configured instrument."""
    names = [i.name for i in model.instruments]
    for i, lim in enumerate(model.alarms.limits):
        if lim.instrument not in names:
            raise ConfigError(
                f"no instrument named {lim.instrument!r} (configured: {', '.join(names) or 'none'})",
                file=file,
                key_path=f"alarms.limits[{i}].instrument",
            )
