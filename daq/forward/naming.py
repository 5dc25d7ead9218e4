"""Names that stay unique across a fleet and that line protocol can carry.

Every point a sink receives is named by its measurement (the instrument's kind) and the tags
``site``, ``cell``, ``instrument`` and ``channel`` (plus ``run_id``, ``nuclide`` and ``dup``,
which the daemon derives itself). Within one daemon, instrument names are unique (checked when
the config loads) and each driver names its channels uniquely. Across daemons writing into one
central store, only ``site`` and ``cell`` tell two cells apart: two daemons left at the default
names would write the same series, and the store would silently overwrite one cell's readings
with the other's.

The rules, checked when a config is loaded (so ``daq check-config`` and ``daq run`` refuse the
same files), each error naming the key path:

* ``[daemon] site`` and ``cell`` must be written explicitly whenever an enabled ``[[sinks]]``
  entry is configured: any sink may be (or later become) shared by several cells, so none is
  trusted to be private.
* ``site``, ``cell``, instrument and channel names, and channel units must be values line
  protocol carries unambiguously (no newline, no empty name, no backslash before another
  backslash, a separator or the end); otherwise every reading of that name would be
  quarantined by the forwarder. The test is the formatter's own escaping functions, so the
  config check and the forwarder cannot disagree.

:func:`check_fleet` compares several configs (``daq check-config A B ...``): no two daemons of
one fleet may share a site and cell name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from daq.clock import SystemClock
from daq.config.base import InstrumentBase, InstrumentsConfig
from daq.config.sections import DaemonSection
from daq.errors import ConfigError, DaqError
from daq.forward.config import InfluxSink
from daq.forward.lineprotocol import LineProtocolError, key, string_field
from drivers import REGISTRY

#: The keys of ``[daemon]`` that name a cell in every point it forwards.
CELL_KEYS = ("site", "cell")


def _raw_path(node: Any, value: str, path: str) -> str | None:
    """The key path of the first string equal to ``value`` under ``node`` (raw TOML data)."""
    if isinstance(node, str):
        return path if node == value else None
    if isinstance(node, Mapping):
        for k, v in node.items():
            found = _raw_path(v, value, f"{path}.{k}")
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _raw_path(v, value, f"{path}[{i}]")
            if found:
                return found
    return None


def _instrument_key(raw: Any, value: str, i: int) -> str:
    """The key path of ``value`` in the raw table of instrument ``i``, or the table's own."""
    return _raw_path(raw, value, f"instruments[{i}]") or f"instruments[{i}]"


def _carried(value: str, what: str, file: str, key_path: str | Callable[[], str]) -> None:
    """Refuse ``value`` unless line protocol can carry it as a tag. ``key_path`` may be a
    function, called only to name a refused value: finding a channel's key in the raw TOML
    walks the instrument's whole table, for every channel of every instrument."""
    try:
        key(value)
    except LineProtocolError as exc:
        raise ConfigError(
            f"{what} {value!r} cannot be written as a line-protocol tag ({exc}); "
            "every reading named by it would be quarantined. Use letters, digits, '-', '_' or '.'",
            file=file,
            key_path=key_path if isinstance(key_path, str) else key_path(),
        ) from None


class NamingConfig(InstrumentsConfig, Protocol):
    """What :func:`check_naming` reads of the whole config."""

    @property
    def daemon(self) -> DaemonSection: ...

    @property
    def sinks(self) -> Sequence[InfluxSink]: ...


class FleetMember(Protocol):
    """What :func:`check_fleet` reads of each loaded config (:class:`daq.configfile.model.Config`)."""

    @property
    def path(self) -> str: ...

    @property
    def daemon(self) -> DaemonSection: ...


def _channels(inst: InstrumentBase) -> list[tuple[str, str]]:
    """The channels (name, unit) a configured instrument produces, as its driver declares them."""
    try:
        driver = REGISTRY[inst.kind](inst, SystemClock())
        return list(driver.channels())
    except (DaqError, ValueError, KeyError):
        # The driver refuses this config itself; the daemon reports that at start.
        return []


def check_naming(model: NamingConfig, data: Mapping[str, Any], file: str) -> None:
    """Refuse names a central store could confuse or line protocol cannot carry.

    ``model`` is the validated config, ``data`` the raw TOML it came from (for key paths).
    Raises :class:`ConfigError` naming the file and key path.
    """
    daemon = model.daemon
    for name in CELL_KEYS:
        _carried(getattr(daemon, name), f"[daemon] {name}", file, f"daemon.{name}")
    sinks = [i for i, s in enumerate(model.sinks) if s.enabled]
    if sinks:
        missing = [name for name in CELL_KEYS if name not in daemon.model_fields_set]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be given when a sink is configured (sinks[{sinks[0]}]): "
                "the tags site and cell are what tell this cell's series from every other cell's "
                "in a shared store, and the defaults would collide",
                file=file,
                key_path=f"daemon.{missing[0]}",
            )
    raw_instruments = data.get("instruments", [])
    for i, inst in enumerate(model.instruments):
        raw = raw_instruments[i] if i < len(raw_instruments) else {}
        _carried(inst.name, "instrument name", file, f"instruments[{i}].name")
        for channel, unit in _channels(inst):
            _carried(channel, "channel name", file, functools.partial(_instrument_key, raw, channel, i))
            try:
                string_field(unit)
            except LineProtocolError as exc:
                where = _instrument_key(raw, unit, i)
                raise ConfigError(
                    f"unit {unit!r} of channel {channel!r} cannot be written in line protocol ({exc})",
                    file=file,
                    key_path=where,
                ) from None


def check_fleet(configs: Iterable[FleetMember]) -> None:
    """Refuse two configs of one fleet that name the same site and cell.

    ``configs`` are loaded :class:`~daq.configfile.model.Config` objects (each already valid on its
    own). Two daemons with the same site and cell would write the same series into a shared
    store. Raises :class:`ConfigError` naming the second file.
    """
    seen: dict[tuple[str, str], str] = {}
    for cfg in configs:
        ident = (cfg.daemon.site, cfg.daemon.cell)
        if ident in seen:
            raise ConfigError(
                f"site {ident[0]!r} and cell {ident[1]!r} are already used by {seen[ident]}; "
                "two daemons of one fleet would write the same series",
                file=cfg.path,
                key_path="daemon.cell",
            )
        seen[ident] = cfg.path
