"""Load and validate a whole configuration file.

Every failure becomes a :class:`~daq.errors.ConfigError` that names the file, the key path
(``instruments[1].serial.baudrate``) and what was expected, so ``daq check-config`` can
print it and exit non-zero.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, create_model, field_validator

from daq.api.config import ApiSection
from daq.config.base import PositiveCount, PositiveSeconds, Seconds, StrictModel
from daq.equilibrium import PhysicsSection
from daq.errors import ConfigError
from daq.forward.config import Sinks
from daq.forward.naming import check_naming
from daq.runs.qc_settings import ReportSection, SigningSection, UsersSection
from daq.runs.qc_settings import check_config as check_qc
from daq.runs.settings import ClockSection, RunsSection
from daq.tlc.methods import TlcSection
from daq.tlc.methods import check_config as check_tlc
from drivers import REGISTRY

#: Keys that would hold a secret inline; secrets come from the environment or credentials.
SECRET_KEYS = frozenset({"token", "password", "secret", "api_key", "apikey", "private_key"})


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


class JournalSection(StrictModel):
    """Group commit: a writer commits what arrived within ``commit_window_s``."""

    commit_window_s: Annotated[Seconds, Field(le=0.1)] = 0.05
    max_batch: Annotated[PositiveCount, Field(le=100_000)] = 5000
    #: Readings waiting for a commit beyond this are dropped *and recorded* as an overflow.
    max_pending: Annotated[PositiveCount, Field(ge=1000)] = 200_000
    retry_after_error_s: Annotated[Seconds, Field(le=60)] = 1.0


def _instrument_union() -> Any:
    models = tuple(d.config_model for d in REGISTRY.values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007


def _build_config_model() -> type[StrictModel]:
    return create_model(
        "DaqConfig",
        __base__=StrictModel,
        daemon=(DaemonSection, DaemonSection()),
        journal=(JournalSection, JournalSection()),
        physics=(PhysicsSection, PhysicsSection()),
        api=(ApiSection, ApiSection()),
        runs=(RunsSection, RunsSection()),
        clock=(ClockSection, ClockSection()),
        instruments=(list[_instrument_union()], []),  # type: ignore[misc,arg-type]
        sinks=(Sinks, []),
        tlc=(TlcSection, TlcSection()),
        users=(UsersSection, UsersSection()),
        signatures=(SigningSection, SigningSection()),
        report=(ReportSection, ReportSection()),
    )


DaqConfigModel = _build_config_model()


class Config:
    """A validated configuration with the file it came from and its hash."""

    def __init__(self, model: Any, *, path: str, text: str):
        self.model = model
        self.path = path
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()

    @property
    def daemon(self) -> DaemonSection:
        return self.model.daemon  # type: ignore[no-any-return]

    @property
    def journal(self) -> JournalSection:
        return self.model.journal  # type: ignore[no-any-return]

    @property
    def instruments(self) -> list[Any]:
        return list(self.model.instruments)

    def with_data_dir(self, data_dir: Path) -> Config:
        model = self.model.model_copy(
            update={"daemon": self.daemon.model_copy(update={"data_dir": data_dir})}
        )
        return Config(model, path=self.path, text=self.text)

    def with_instruments(self, instruments: list[Any]) -> Config:
        return Config(
            self.model.model_copy(update={"instruments": instruments}),
            path=self.path,
            text=self.text,
        )


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


def _cross_check(model: Any, file: str) -> None:
    _check_trigger(model, file)
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


def _check_trigger(model: Any, file: str) -> None:
    """The run trigger names a configured instrument (``daq run`` would refuse it at start)."""
    wanted = model.runs.trigger_instrument
    names = [i.name for i in model.instruments]
    if wanted is not None and wanted not in names:
        expected = f"expected one of: {', '.join(names)}" if names else "no instrument is configured"
        raise ConfigError(
            f"no instrument named {wanted!r}; {expected}", file=file, key_path="runs.trigger_instrument"
        )


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
    _cross_check(model, path)
    check_naming(model, data, path)
    check_tlc(model, path)
    check_qc(model, path)
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
    "JournalSection",
    "PositiveSeconds",
    "load_config",
    "parse_config",
]
