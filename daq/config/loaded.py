"""What a feature reads of the loaded config file, as a protocol: where it came from, its text
and hash, the ``[daemon]`` section and the instruments. The loaded file itself
(:class:`daq.configfile.model.Config`) is assembled above the features, so they name this
instead.
"""

from __future__ import annotations

from typing import Protocol

from daq.config.base import InstrumentsConfig
from daq.config.sections import DaemonSection


class LoadedConfig(InstrumentsConfig, Protocol):
    """A validated config file (:class:`daq.configfile.model.Config` is one)."""

    @property
    def path(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def daemon(self) -> DaemonSection: ...
