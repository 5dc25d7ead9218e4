"""The daemon's own section, ``[daemon]``: where the journal lives, how this line is named."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from daq.config.base import Seconds, StrictModel


class DaemonSection(StrictModel):
    """Where the journal lives and how this line is named in exported data."""

    data_dir: Path = Path("/var/lib/hotcell-daq")
    site: str = "site"
    cell: str = "cell"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: The site's time zone (IANA name, e.g. ``Europe/Vienna``) for times people read (the run
    #: report); empty: the system's. Stored times stay UTC.
    timezone: str = ""
    #: SIGTERM ends the process within this many seconds, whatever hangs: the stop steps
    #: share it, and a last-resort exit (logged) follows when it runs out.
    shutdown_timeout_s: Annotated[Seconds, Field(ge=1, le=600)] = 15.0

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if value:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r} (expected an IANA name such as Europe/Vienna)"
                ) from None
        return value
