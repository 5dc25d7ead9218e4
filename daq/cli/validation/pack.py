"""The validation pack on disk: ``validation.json`` (everything), ``validation.pdf`` (the
protocol and results for a QA reader), ``evidence/`` and ``MANIFEST.json`` (the SHA-256 of
every other file), and :func:`verify_pack` that checks a pack against its manifest."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from daq.cli.validation.requirements import Requirement
from daq.cli.validation.results import DEVIATIONS, Scenario, sha256_file

JSON_FILE = "validation.json"
PDF_FILE = "validation.pdf"
MANIFEST = "MANIFEST.json"

PURPOSE = (
    "This report records the installation qualification (IQ) and operational qualification (OQ) "
    "of hotcell-daq, run by `daq validate`. Each requirement of validation/requirements.toml is "
    "traced to the scenarios that verify it; each scenario records its steps, expected and actual "
    "results, verdict, times and evidence files with their SHA-256."
)
SCOPE = (
    "IQ: this machine's Python and dependency versions against the pinned set, the installed files "
    "against the distribution's RECORD, the site configuration and its hash, the data directory, "
    "the systemd unit and its hardening, the clock's synchronisation. OQ: acceptance scenarios "
    "against the project's instrument simulators over their real protocols, in a scratch data "
    "directory, with faults injected. Out of scope: the site's own requirements, performance "
    "qualification with the real instruments, change control and periodic review."
)


def requirement_result(req: Requirement, by_id: dict[str, Scenario]) -> str:
    """A requirement's result: ``fail``/``not_verifiable`` if any of its scenarios is,
    ``not run`` if none ran, ``skipped`` if all were, ``recorded`` if they only recorded
    observations, else ``pass`` (every scenario that ran passed, or was informational)."""
    ran = [by_id[s] for s in req.scenarios if s in by_id]
    if not ran:
        return "not run"
    for status in ("fail", "not_verifiable"):
        if any(s.status == status for s in ran):
            return status
    if all(s.status == "skipped" for s in ran):
        return "skipped"
    if all(s.status in ("informational", "skipped") for s in ran):
        return "recorded"  # only observations (an IQ fact of this machine): for the site to judge
    return "pass"


def build(system: dict[str, Any], reqs: list[Requirement], scenarios: list[Scenario]) -> dict[str, Any]:
    by_id = {s.id: s for s in scenarios}
    trace = [
        {
            "requirement": r.id,
            "area": r.area,
            "risk": r.risk,
            "text": r.text,
            "scenarios": [
                {"id": s, "status": by_id[s].status if s in by_id else "not run"} for s in r.scenarios
            ],
            "result": requirement_result(r, by_id),
        }
        for r in reqs
    ]
    deviations = [
        {
            "scenario": s.id,
            "title": s.title,
            "status": s.status,
            "detail": s.note
            or "; ".join(
                f"{st.action}: expected {st.expected}, got {st.actual}" for st in s.steps if not st.passed
            ),
        }
        for s in scenarios
        if s.status in DEVIATIONS
    ]
    counts: dict[str, int] = {}
    for s in scenarios:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {
        "purpose": PURPOSE,
        "scope": SCOPE,
        "system": system,
        "trace": trace,
        "scenarios": [s.as_dict() for s in scenarios],
        "deviations": deviations,
        "summary": {
            "scenarios": counts,
            "requirements": len(reqs),
            "deviations": len(deviations),
            "verdict": "PASSED" if not deviations else "DEVIATIONS",
        },
    }


def _lines_pdf(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (style, text) lines: style ``h`` heading, ``t`` text, ``m`` monospace."""
    out: list[tuple[str, str]] = [("title", "hotcell-daq validation report (IQ/OQ)")]

    def para(text: str) -> None:
        out.extend(("t", line) for line in textwrap.wrap(text, 110))

    out.append(("h", "1. Purpose"))
    para(doc["purpose"])
    out.append(("h", "2. Scope"))
    para(doc["scope"])
    out.append(("h", "3. System description"))
    for k, v in doc["system"].items():
        para(f"{k}: {v}")
    out.append(("h", "4. Trace matrix: requirement -> scenario -> result"))
    for t in doc["trace"]:
        scen = ", ".join(f"{s['id']} {s['status']}" for s in t["scenarios"])
        out.append(("m", f"{t['requirement']}  [{t['risk']:<6}] {t['result'].upper():<15} {scen}"))
        out.extend(("s", "      " + line) for line in textwrap.wrap(t["text"], 100))
    out.append(("h", "5. Scenarios"))
    for s in doc["scenarios"]:
        out.append(("m", f"{s['id']}  {s['status'].upper()}  {s['started']} .. {s['finished']}"))
        out.extend(
            ("s", "      " + line)
            for line in textwrap.wrap(s["title"] + (f" - {s['note']}" if s["note"] else ""), 100)
        )
        for st in s["steps"]:
            mark = "ok " if st["passed"] else "FAIL"
            text = f"{mark} {st['action']}: expected {st['expected']}; actual {st['actual']}"
            out.extend(
                ("s", ("        " if i else "    ") + line)
                for i, line in enumerate(textwrap.wrap(text, 104)[:4])
            )
        for e in s["evidence"]:
            out.append(("s", f"    evidence {e['file']} sha256 {e['sha256'][:16]}..."))
    out.append(("h", "6. Deviations"))
    if not doc["deviations"]:
        para("None.")
    for d in doc["deviations"]:
        out.extend(
            ("t", line) for line in textwrap.wrap(f"{d['scenario']} ({d['status']}): {d['detail']}", 110)
        )
    out.append(("h", "7. Summary"))
    sm = doc["summary"]
    para(
        f"Verdict: {sm['verdict']}. {sm['requirements']} requirements; scenarios: "
        + ", ".join(f"{n} {k}" for k, n in sorted(sm["scenarios"].items()))
        + f"; {sm['deviations']} deviation(s)."
    )
    return out


def render_pdf(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    lines = _lines_pdf(doc)
    sizes = {
        "title": (14, 0.03, "bold"),
        "h": (11, 0.026, "bold"),
        "t": (8, 0.016, "normal"),
        "m": (7.5, 0.015, "bold"),
        "s": (7, 0.0135, "normal"),
    }
    pages: list[list[tuple[str, str]]] = [[]]
    room = 0.88
    for style, text in lines:
        h = sizes[style][1]
        if room - h < 0 or (style == "h" and room < 0.1):
            pages.append([])
            room = 0.88
        pages[-1].append((style, text))
        room -= h
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(path) as pdf:
        for n, page in enumerate(pages, 1):
            fig = plt.figure(figsize=(8.27, 11.69))
            y = 0.94
            for style, text in page:
                size, h, weight = sizes[style]
                family = "monospace" if style in ("m", "s") else "sans-serif"
                fig.text(0.06, y, text, fontsize=size, fontweight=weight, family=family, va="top")
                y -= h
            fig.text(
                0.06,
                0.025,
                f"hotcell-daq {doc['system'].get('hotcell-daq', '')}  |  {doc['summary']['verdict']}",
                fontsize=7,
            )
            fig.text(0.94, 0.025, f"page {n} of {len(pages)}", fontsize=7, ha="right")
            pdf.savefig(fig)
            plt.close(fig)


def write(out: Path, doc: dict[str, Any]) -> None:
    """``validation.json``, ``validation.pdf`` and the manifest over every file in ``out``."""
    (out / JSON_FILE).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    render_pdf(doc, out / PDF_FILE)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"files": {str(p.relative_to(out)): sha256_file(p) for p in files}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def verify_pack(out: Path) -> tuple[bool, str]:
    """``(ok, one line)``: every file of the manifest present with its hash, and no file added."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"{out / MANIFEST}: unreadable manifest ({exc})"
    for name, digest in sorted(manifest.items()):
        p = out / name
        if not p.is_file():
            return False, f"{name}: missing"
        if sha256_file(p) != digest:
            return False, f"{name}: SHA-256 differs from the manifest"
    extra = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.name != MANIFEST and str(p.relative_to(out)) not in manifest
    )
    if extra:
        return False, f"{extra[0]}: not in the manifest"
    return True, f"{len(manifest)} files match the manifest"
