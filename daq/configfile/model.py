"""The whole configuration as one static, typed model, and the validated file it came from.

Each section model lives with its feature (``[api]`` in :mod:`daq.api.config`, ``[journal]``
in :mod:`daq.journal.settings`, ``[[sinks]]`` in :mod:`daq.forward.config`...) and imports
only :mod:`daq.config.base`. This module sits above them all: a section is registered by being
a field of :class:`DaqConfig` here, so the model is known statically (``Config.model`` is a
:class:`DaqConfig`, every section has its type). Instruments are the discriminated union of
the drivers' own config models (``kind`` selects one), typed as their common base.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from daq.alarms.settings import AlarmsSection
from daq.api.config import ApiSection
from daq.config.base import InstrumentBase, StrictModel
from daq.config.sections import DaemonSection
from daq.equilibrium import PhysicsSection
from daq.forward.config import Sinks
from daq.journal.settings import JournalSection
from daq.runs.qc_settings import ReportSection, SigningSection, UsersSection
from daq.runs.settings import ClockSection, RunsSection
from daq.tlc.methods import TlcSection
from drivers import REGISTRY

if TYPE_CHECKING:
    # What every instrument model has; the exact model is chosen by ``kind`` at validation.
    AnyInstrument = InstrumentBase
else:
    _MODELS = tuple(d.config_model for d in REGISTRY.values())
    AnyInstrument = (
        _MODELS[0] if len(_MODELS) == 1 else Annotated[Union[_MODELS], Field(discriminator="kind")]  # noqa: UP007
    )


class DaqConfig(StrictModel):
    """Every section of a configuration file (unknown keys are refused)."""

    daemon: DaemonSection = DaemonSection()
    journal: JournalSection = JournalSection()
    physics: PhysicsSection = PhysicsSection()
    api: ApiSection = ApiSection()
    runs: RunsSection = RunsSection()
    clock: ClockSection = ClockSection()
    instruments: list[AnyInstrument] = Field(default_factory=list)
    sinks: Sinks = Field(default_factory=list)
    tlc: TlcSection = TlcSection()
    users: UsersSection = UsersSection()
    signatures: SigningSection = SigningSection()
    report: ReportSection = ReportSection()
    alarms: AlarmsSection = AlarmsSection()


class Config:
    """A validated configuration with the file it came from and its hash."""

    def __init__(self, model: DaqConfig, *, path: str, text: str):
        self.model = model
        self.path = path
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()

    @property
    def daemon(self) -> DaemonSection:
        return self.model.daemon

    @property
    def journal(self) -> JournalSection:
        return self.model.journal

    @property
    def instruments(self) -> list[InstrumentBase]:
        return list(self.model.instruments)

    def with_data_dir(self, data_dir: Path) -> Config:
        model = self.model.model_copy(
            update={"daemon": self.daemon.model_copy(update={"data_dir": data_dir})}
        )
        return Config(model, path=self.path, text=self.text)

    def with_instruments(self, instruments: list[InstrumentBase]) -> Config:
        return Config(
            self.model.model_copy(update={"instruments": instruments}),
            path=self.path,
            text=self.text,
        )
