"""The requirements list (``validation/requirements.toml``) and its trace to scenarios."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from daq.errors import ConfigError

#: In a checkout the list sits beside the package; an installed wheel carries a copy in the
#: package (see pyproject's package data).
_CHECKOUT = Path(__file__).resolve().parents[3] / "validation" / "requirements.toml"
_PACKAGED = Path(__file__).resolve().parent / "requirements.toml"

RISKS = ("high", "medium", "low")


@dataclasses.dataclass(frozen=True)
class Requirement:
    id: str
    area: str
    text: str
    risk: str
    scenarios: tuple[str, ...]


def default_path() -> Path:
    return _CHECKOUT if _CHECKOUT.is_file() else _PACKAGED


def load(path: Path | None = None) -> list[Requirement]:
    """Read the list; raises :class:`ConfigError` naming the file and entry on a bad one."""
    p = path or default_path()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
    out: list[Requirement] = []
    for i, entry in enumerate(data.get("requirement", [])):
        where = f"{p}: requirement[{i}]"
        try:
            req = Requirement(
                id=str(entry["id"]),
                area=str(entry["area"]),
                text=str(entry["text"]),
                risk=str(entry["risk"]),
                scenarios=tuple(str(s) for s in entry["scenarios"]),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: missing key {exc}") from None
        if req.risk not in RISKS:
            raise ConfigError(f"{where}.risk: expected one of {', '.join(RISKS)}, got {req.risk!r}")
        out.append(req)
    return out


def trace_problems(reqs: list[Requirement], known: set[str]) -> list[str]:
    """Requirements traced to no scenario, or to a scenario id that does not exist."""
    problems = []
    seen: set[str] = set()
    for r in reqs:
        if r.id in seen:
            problems.append(f"{r.id}: listed twice")
        seen.add(r.id)
        if not r.scenarios:
            problems.append(f"{r.id}: traced to no scenario")
        problems.extend(f"{r.id}: unknown scenario {s}" for s in r.scenarios if s not in known)
    return problems
