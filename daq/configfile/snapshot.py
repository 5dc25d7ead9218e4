"""The config in force for a run or a command on a stopped daemon's journal.

``daq users``, ``daq sign``, ``daq report`` and the API's signing route apply the rules of
``[users]``, ``[signatures]`` and ``[report]``: of a config file given on the command line, else
of the journal's snapshot of the config a run was acquired with, else of the newest snapshot,
else the defaults.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daq.configfile.load import load_config, parse_config
from daq.configfile.model import DaqConfig
from daq.errors import ConfigError


def site_config(conn: sqlite3.Connection, path: Path | None, config_sha256: str | None = None) -> DaqConfig:
    """The validated config model whose rules apply: ``path`` if given, else the journal's
    snapshot with ``config_sha256`` (a run's), else the newest snapshot, else the defaults."""
    if path is not None:
        return load_config(path).model
    row = None
    if config_sha256:
        row = conn.execute(
            "SELECT text, path FROM configs WHERE sha256 = ? ORDER BY id DESC LIMIT 1", (config_sha256,)
        ).fetchone()
    if row is None:
        row = conn.execute("SELECT text, path FROM configs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return DaqConfig()
    try:
        return parse_config(row[0], path=f"{row[1] or 'config'} (snapshot in the journal)").model
    except ConfigError as exc:
        raise ConfigError(f"{exc}; give --config FILE") from None


def run_config(conn: sqlite3.Connection, config_sha256: str | None) -> DaqConfig:
    """The config a run was acquired with (its snapshot in the journal; see :func:`site_config`)."""
    return site_config(conn, None, config_sha256)
