"""The ``[users]``, ``[signatures]`` and ``[report]`` config sections (registered in
:mod:`daq.configfile.load`); kept free of imports so the config loader can import them."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from pydantic import Field, field_validator

from daq.config.base import InstrumentsConfig, StrictModel
from daq.errors import ConfigError


class UsersSection(StrictModel):
    """Password rules and lockout of the local accounts (:mod:`daq.users`)."""

    #: Shortest password accepted when one is set (NIST SP 800-63B asks at least 8).
    min_password_length: Annotated[int, Field(ge=8, le=128)] = 12
    #: Failed sign-ins in a row after which the account is locked (until an admin unlocks it).
    max_failed_attempts: Annotated[int, Field(ge=1, le=100)] = 5


class SigningSection(StrictModel):
    """Separation of duties when signing a run (:mod:`daq.runs.signatures`)."""

    #: The approver must not be the run's operator (its ``operator`` or who started it).
    approver_not_operator: bool = True
    #: The approver must not have signed the run as reviewer.
    approver_not_reviewer: bool = True
    #: The reviewer must not be the run's operator.
    reviewer_not_operator: bool = False


def _channel(value: str | None) -> str | None:
    if value is not None and (value.count("/") != 1 or not all(value.split("/"))):
        raise ValueError(f"expected INSTRUMENT/CHANNEL, got {value!r}")
    return value


class ProcessGroup(StrictModel):
    """One group of process plots on the report: a title and its channels, in order."""

    title: Annotated[str, Field(min_length=1)]
    channels: Annotated[list[str], Field(min_length=1, max_length=8)]

    @field_validator("channels")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        for v in value:
            _channel(v)
        return value


class ReportSection(StrictModel):
    """What the run report states (:mod:`daq.runs.report`).

    The radiochemical yield is the product activity over the starting activity, both
    decay-corrected to the reference time (and also given uncorrected); each is a GOOD reading
    (``*_take``: first, last or max) of an ``INSTRUMENT/CHANNEL`` holding an activity (Bq, or
    MBq/GBq/kBq/mCi for synthesizer probes).
    """

    yield_start: str | None = None
    #: Which GOOD reading of the start channel holds the starting activity.
    yield_start_take: Literal["first", "last", "max"] = "first"
    yield_product: str | None = None
    #: Which GOOD reading of the product channel holds the product activity.
    yield_product_take: Literal["first", "last", "max"] = "last"
    #: The activity table's reference time: ``eos`` (end of synthesis) or an ISO 8601 time with offset.
    reference: str = "eos"
    #: Process plots, grouped and ordered; without groups the report plots every process channel
    #: (and says how many it shows).
    process: tuple[ProcessGroup, ...] = ()

    @field_validator("yield_start", "yield_product")
    @classmethod
    def _check_channel(cls, value: str | None) -> str | None:
        return _channel(value)

    @field_validator("reference")
    @classmethod
    def _check_reference(cls, value: str) -> str:
        if value == "eos":
            return value
        from datetime import datetime

        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected 'eos' or an ISO 8601 time with offset, got {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"the reference time {value!r} needs an offset (e.g. +01:00)")
        return value


class ReportConfig(InstrumentsConfig, Protocol):
    """What :func:`check_config` reads of the whole config."""

    @property
    def report(self) -> ReportSection: ...


def check_config(model: ReportConfig, file: str) -> None:
    """Cross-check: the ``[report]`` channels name configured instruments (a typo would leave
    the yield or a plot empty on every report)."""
    names = {i.name for i in model.instruments}
    report: ReportSection = model.report
    keys: list[tuple[str, str | None]] = [
        ("report.yield_start", report.yield_start),
        ("report.yield_product", report.yield_product),
    ]
    for g, group in enumerate(report.process):
        keys += [(f"report.process[{g}].channels[{c}]", ch) for c, ch in enumerate(group.channels)]
    for path, key in keys:
        if key is not None and key.split("/", 1)[0] not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ConfigError(
                f"{key!r} names no configured instrument (known: {known})", file=file, key_path=path
            )
