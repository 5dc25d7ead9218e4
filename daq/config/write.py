"""Write a validated configuration back to TOML.

Used where the daemon's own tools generate a runnable config (``daq demo --write-config``,
benchmarks). The output re-validates to the same model: :func:`dump_config` is the inverse of
:func:`daq.config.load.parse_config` for the values that matter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from daq.config.model import Config

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _emit(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    for k, v in table.items():
        if v is None or isinstance(v, Mapping) or _is_table_array(v):
            continue
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        sub = [*path, _key(k)]
        if isinstance(v, Mapping):
            lines.extend(["", f"[{'.'.join(sub)}]"])
            _emit(lines, sub, v)
        elif _is_table_array(v):
            for item in v:
                lines.extend(["", f"[[{'.'.join(sub)}]]"])
                _emit(lines, sub, item)


def to_toml(data: Mapping[str, Any]) -> str:
    """Render nested mappings, lists and scalars as TOML (``None`` values are left out)."""
    lines: list[str] = []
    _emit(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def dump_config(config: Config, header: str = "") -> str:
    """The TOML text of ``config``; ``header`` lines are written as comments first."""
    body = to_toml(config.model.model_dump(mode="json", exclude_none=True))
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + ("\n" if comments else "") + body
