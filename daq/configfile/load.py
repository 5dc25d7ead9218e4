"""Load and validate a whole configuration file.

Every failure becomes a :class:`~daq.errors.ConfigError` that names the file, the key path
(``instruments[1].serial.baudrate``) and what was expected, so ``daq check-config`` can
print it and exit non-zero.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daq.alarms.settings import check_config as check_alarms
from daq.config.base import PositiveSeconds
from daq.config.sections import DaemonSection
from daq.configfile.model import Config, DaqConfig
from daq.errors import ConfigError
from daq.forward.naming import check_naming
from daq.journal.settings import JournalSection
from daq.runs.qc_settings import check_config as check_qc
from daq.tlc.methods import check_config as check_tlc
from drivers import REGISTRY

#: Keys that would hold a secret inline; secrets come from the environment or credentials.
SECRET_KEYS = frozenset({"token", "password", "secret", "api_key", "apikey", "private_key"})

#: The model every file is validated against (:class:`daq.configfile.model.DaqConfig`).
DaqConfigModel = DaqConfig

#: A feature's check across sections, run after validation: (the model, the file) and it
#: raises :class:`ConfigError` naming the key. The features' own checks are registered here.
CrossCheck = Callable[[DaqConfig, str], None]


def _key_path(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        # Discriminated unions put the tag ("veenstra-vdc404") in the location: skip it.
        if isinstance(node, Mapping) and part not in node and part in REGISTRY:
            continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def _expectation(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (not expected here)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown instrument kind {err.get('input')!r}; expected one of: {', '.join(REGISTRY)}"
    if kind == "secret_in_value":  # never echo a secret back
        return str(err["msg"])
    if kind == "union_tag_not_found":
        return f"missing 'kind'; expected one of: {', '.join(REGISTRY)}"
    return f"{err['msg']} (got {err.get('input')!r})"


def _find_inline_secrets(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if str(key).lower() in SECRET_KEYS:
                found.append(sub)
            found.extend(_find_inline_secrets(value, sub))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_find_inline_secrets(value, f"{path}[{i}]"))
    return found


def _cross_check(model: DaqConfig, file: str) -> None:
    """Instrument names unique, one owner per port."""
    names: dict[str, int] = {}
    buses: dict[str, int] = {}
    for i, inst in enumerate(model.instruments):
        if inst.name in names:
            raise ConfigError(
                f"duplicate instrument name {inst.name!r} (already used by instruments[{names[inst.name]}])",
                file=file,
                key_path=f"instruments[{i}].name",
            )
        names[inst.name] = i
        bus = inst.bus()
        if bus is not None and inst.enabled:
            if bus in buses:
                raise ConfigError(
                    f"port {bus!r} is already used by instruments[{buses[bus]}]; one port has one owner",
                    file=file,
                    key_path=f"instruments[{i}].port",
                )
            buses[bus] = i


def _check_trigger(model: DaqConfig, file: str) -> None:
    """The run trigger names a configured instrument (``daq run`` would refuse it at start)."""
    wanted = model.runs.trigger_instrument
    names = [i.name for i in model.instruments]
    if wanted is not None and wanted not in names:
        expected = f"expected one of: {', '.join(names)}" if names else "no instrument is configured"
        raise ConfigError(
            f"no instrument named {wanted!r}; {expected}", file=file, key_path="runs.trigger_instrument"
        )


#: Run in this order after validation; add a feature's cross-check here.
CROSS_CHECKS: list[CrossCheck] = [_check_trigger, _cross_check, check_tlc, check_qc, check_alarms]


def parse_config(text: str, *, path: str = "<string>") -> Config:
    """Validate TOML text; raises :class:`ConfigError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from exc
    if not data:
        # Every key has a default, so an empty (or all-comment) file would "validate" into a
        # daemon that acquires nothing: almost always the wrong file or a truncated one.
        raise ConfigError(
            "the file is empty; expected at least an [[instruments]] table", file=path, key_path="(top level)"
        )
    secrets = _find_inline_secrets(data)
    if secrets:
        raise ConfigError(
            "secrets may not be written in the config file; give the name of an environment "
            "variable (*_env) or a systemd credential (*_credential) instead",
            file=path,
            key_path=secrets[0],
        )
    try:
        # The context lets a section resolve files it names relative to this file.
        model = DaqConfigModel.model_validate(data, context={"config_path": path})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(
            _expectation(first) + more, file=path, key_path=_key_path(first["loc"], data)
        ) from None
    for check in CROSS_CHECKS:
        check(model, path)
    check_naming(model, data, path)
    return Config(model, path=path, text=text)


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; raises :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from None
    return parse_config(text, path=str(p))


__all__ = [
    "Config",
    "DaemonSection",
    "DaqConfig",
    "JournalSection",
    "PositiveSeconds",
    "load_config",
    "parse_config",
]
