"""The ``[runs]`` and ``[clock]`` config sections (registered in :mod:`daq.configfile.load`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from daq.config.base import Days, Name, Seconds, StrictModel
from daq.physics import UnknownNuclide, nuclide


class RunsSection(StrictModel):
    """Runs (batches): defaults for runs started automatically, the trigger, retention.

    With ``trigger_instrument`` and ``trigger_channel`` set, a run starts when that channel's
    GOOD value rises to ``trigger_threshold`` or above and stops when it falls below it (for
    example a synthesizer's ``sequence_running`` flag).
    """

    trigger_instrument: Name | None = None
    trigger_channel: str | None = None
    trigger_threshold: float = 0.5
    #: Batch number of an automatic run: ``<batch_prefix>-<UTC start, YYYYmmddTHHMMSSZ>``.
    batch_prefix: str = "AUTO"
    product: str = "unspecified"
    nuclide: str = "unspecified"
    operator: str = "automatic"
    method: str | None = None
    #: Journal data may be pruned only this long after its run ended (and once exported).
    retention_days: Days = 365.0

    @model_validator(mode="after")
    def _check_trigger(self) -> RunsSection:
        if (self.trigger_instrument is None) != (self.trigger_channel is None):
            raise ValueError("trigger_instrument and trigger_channel must be given together")
        return self

    @field_validator("nuclide")
    @classmethod
    def _known_nuclide(cls, value: str) -> str:
        if value.strip().lower() in ("", "unspecified"):
            return "unspecified"
        try:
            return nuclide(value).symbol
        except UnknownNuclide as exc:
            raise ValueError(str(exc)) from None


class ClockSection(StrictModel):
    """Time integrity: how often the clocks are compared and the sync state is read.

    A clock step is a change of (wall - monotonic) larger than ``step_threshold_s`` between two
    checks; NTP slewing changes it by at most 0.5 ms per second, so 0.1 s is far above slew.
    """

    check_every_s: Annotated[Seconds, Field(le=3600)] = 1.0
    step_threshold_s: Annotated[Seconds, Field(le=3600)] = 0.1
    #: The sync state is recorded at start, on every change, and at least this often.
    sync_record_every_s: Seconds = 3600.0
    #: ``auto`` asks the kernel (adjtimex) and falls back to ``timedatectl``; ``none`` records unknown.
    sync_source: Literal["auto", "adjtimex", "timedatectl", "none"] = "auto"
    #: Mark GOOD readings UNCERTAIN (reason ``clock_unsynchronised``) while the clock is known
    #: to be unsynchronised. Off by default: containers and test machines often run unsynchronised.
    flag_unsynchronised: bool = False
