"""What a validation scenario records: steps with expected and actual results, a verdict,
its times, and evidence files with their SHA-256."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Verdicts. ``informational`` records an observation that is not pass/fail (an IQ fact of a
#: development machine); ``skipped`` says why a scenario could not run here (a tool missing);
#: ``not_verifiable`` is a requirement the pack cannot check yet. Only ``pass``,
#: ``informational`` and ``skipped`` are not deviations.
PASS = "pass"  # noqa: S105 (a verdict, not a password)
FAIL = "fail"
INFORMATIONAL = "informational"
SKIPPED = "skipped"
NOT_VERIFIABLE = "not_verifiable"
DEVIATIONS = (FAIL, NOT_VERIFIABLE)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Step:
    action: str
    expected: str
    actual: str
    passed: bool


@dataclasses.dataclass
class Scenario:
    """One scenario's record; :meth:`check` adds a step, :meth:`evidence` a file."""

    id: str
    title: str
    status: str = PASS
    started: str = dataclasses.field(default_factory=now_iso)
    finished: str = ""
    steps: list[Step] = dataclasses.field(default_factory=list)
    evidence: list[dict[str, str]] = dataclasses.field(default_factory=list)
    note: str = ""

    def check(self, action: str, expected: str, actual: Any, passed: bool) -> bool:
        self.steps.append(Step(action, expected, str(actual), bool(passed)))
        if not passed and self.status in (PASS, INFORMATIONAL):
            self.status = FAIL
        return bool(passed)

    def observe(self, action: str, actual: Any) -> None:
        """A recorded observation that is not pass/fail."""
        self.steps.append(Step(action, "(recorded)", str(actual), True))

    def evidence_json(self, out: Path, name: str, data: Any) -> Path:
        path = out / "evidence" / f"{self.id}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str, sort_keys=True) + "\n", encoding="utf-8")
        self.add_evidence(out, path)
        return path

    def add_evidence(self, out: Path, path: Path) -> None:
        self.evidence.append({"file": str(path.relative_to(out)), "sha256": sha256_file(path)})

    def finish(self, status: str | None = None, note: str = "") -> Scenario:
        if status is not None:
            self.status = status
        if note:
            self.note = note
        self.finished = now_iso()
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
