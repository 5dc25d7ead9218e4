"""The documentation holds together: every relative link resolves, nothing of the old README is lost.

The README was cut down to what a newcomer needs; its sections moved to ``docs/``. The list
below is every heading the long README had; each must still be a heading in the README or in
some ``docs/*.md``, so a later edit cannot silently drop a section.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

OLD_README_HEADINGS = [
    "hotcell-daq",
    "Contents",
    "Two commands",
    "Layout",
    "The command line",
    "Configuration",
    "The reading",
    "The journal",
    "Supervisors",
    "Dose calibrators",
    "The `line` driver",
    "Physics: the nuclide table, `daq decay` and the Ac-225 equilibrium gate",
    "Writes to instruments",
    "Simulators",
    "Radio-TLC: chromatograms, ROI integration and radiochemical purity",
    "The scanner and its driver",
    "Methods",
    "Analysis",
    "Re-integration",
    "Command line",
    "The simulator",
    'Modbus: synthesizer modules and cell PLCs (`kind = "modbus"`)',
    "Connection",
    "Register map",
    "Acquisition",
    "Writes",
    "RTU",
    "The synthesis simulator over Modbus (`synth-modbus`)",
    'OPC UA: synthesizer and cell PLCs (`kind = "opcua"`)',
    "Node map",
    "Acquisition",
    "Security",
    "Synthesis simulator over OPC UA",
    "What was measured",
    "Forwarding to InfluxDB (store and forward)",
    "Configuration",
    "Secrets and transport",
    "Schema",
    "Exactly once: replays overwrite themselves, distinct readings never collide",
    "Errors",
    "Visibility",
    "Demo",
    "Tests",
    "Benchmark",
    "Runs, audit trail, time integrity, exports and reports",
    "Starting and stopping runs",
    "Audit trail",
    "Time integrity",
    "Sealing",
    "Exports",
    "Report, review and signatures",
    "Retention",
    "Live view: local API, `daq tail`, `daq status`, metrics and the live page",
    "Configuration",
    "Endpoints",
    "`daq tail`",
    "`daq status`",
    "The live page",
    "Metrics",
    "Isolation and latency, measured",
    "Running on the line PC as a systemd service",
    "What the daemon tells systemd",
    "Installing",
    "Logs",
    "Secrets and rotating the InfluxDB token",
    "Hardening, and what it leaves open",
    "Performance and reliability",
    "Journal",
    "Synthesizers: 3 × 100 channels at 10 Hz",
    "The realistic hot cell, and the maximum rate",
    "Forwarding",
    "Crash consistency",
    "Fuzzing",
    "Fault matrix",
    "Development",
]

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def headings(text: str) -> list[str]:
    """Markdown headings outside fenced code blocks, without their ``#`` marks."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not fence:
            out.append(m.group(1))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub makes for a document, with ``-1``, ``-2`` for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings(text):
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(text: str) -> list[str]:
    """Link and image targets outside fenced code blocks and inline code."""
    found: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        found.extend(a or b for a, b in _LINK.findall(line))
    return found


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 300


@pytest.mark.parametrize("heading", OLD_README_HEADINGS)
def test_every_old_readme_section_is_still_documented(heading: str) -> None:
    everywhere = {h for doc in DOCS for h in headings(doc.read_text())}
    assert heading in everywhere, f"{heading!r} is a heading of no document"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto: are not checked here
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading with this anchor")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_the_checks_see_links_and_anchors() -> None:
    text = "# A title\n## Two, words: `x`\n## Two, words: `x`\n[a](b.md#c) ![i](img.png)\n```\n[no](x)\n```\n"
    assert anchors(text) == {"a-title", "two-words-x", "two-words-x-1"}
    assert links(text) == ["b.md#c", "img.png"]


# Names of documents that were never part of the repository; the facts live in docs/ now.
_OUTSIDE = re.compile(r"\b(?:DOMAIN|PERFORMANCE|STYLE)\.md\b|(?<![\w.])shared/")


def test_no_file_refers_to_documents_outside_the_repository() -> None:
    here = Path(__file__).resolve()
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in ("daq", "drivers", "simulators", "tests", "bench", "docs", "config", "systemd"):
        files.extend(p for p in (ROOT / folder).rglob("*") if p.is_file() and "node_modules" not in p.parts)
    found: list[str] = []
    for path in files:
        if path == here or path.suffix in (".pyc", ".png", ".pdf", ".sqlite3"):
            continue
        text = path.read_text(errors="replace")
        found.extend(f"{path.relative_to(ROOT)}: {m.group(0)}" for m in _OUTSIDE.finditer(text))
    assert not found, found


#: A path of the repository written in backticks: ``daq/journal/batch.py``, ``drivers/opcua/``.
CODE_PATH = re.compile(r"`((?:daq|drivers|simulators|bench|tests|config|systemd|validation)/[\w./-]+)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_document_names_exists(doc: Path) -> None:
    # Modules move when the code is reorganised; a document naming one that is gone sends a
    # newcomer to nothing.
    missing = sorted(
        {p for p in CODE_PATH.findall(doc.read_text(encoding="utf-8")) if not (ROOT / p).exists()}
    )
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"
