"""The ``[journal]`` section: how the journal's writer groups commits and bounds its buffer."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from daq.config.base import PositiveCount, Seconds, StrictModel


class JournalSection(StrictModel):
    """Group commit: a writer commits what arrived within ``commit_window_s``."""

    commit_window_s: Annotated[Seconds, Field(le=0.1)] = 0.05
    max_batch: Annotated[PositiveCount, Field(le=100_000)] = 5000
    #: Readings waiting for a commit beyond this are dropped *and recorded* as an overflow.
    max_pending: Annotated[PositiveCount, Field(ge=1000)] = 200_000
    retry_after_error_s: Annotated[Seconds, Field(le=60)] = 1.0
