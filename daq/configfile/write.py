"""Write a validated configuration back to TOML.

Used where the daemon's own tools generate a runnable config (``daq demo --write-config``,
benchmarks). The output re-validates to the same model: :func:`dump_config` is the inverse of
:func:`daq.configfile.load.parse_config` for the values that matter. The TOML itself is written by
tomli-w (the maintained counterpart of the standard library's reader).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w

from daq.configfile.model import Config


def _without_none(value: Any) -> Any:
    """TOML has no null: a key whose value is ``None`` is left out, at any depth."""
    if isinstance(value, Mapping):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def to_toml(data: Mapping[str, Any]) -> str:
    """Render nested mappings, lists and scalars as TOML (``None`` values are left out).
    Raises TypeError for a value TOML cannot hold."""
    return tomli_w.dumps(_without_none(data))


def dump_config(config: Config, header: str = "") -> str:
    """The TOML text of ``config``; ``header`` lines are written as comments first."""
    body = to_toml(config.model.model_dump(mode="json", exclude_none=True))
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + ("\n" if comments else "") + body
