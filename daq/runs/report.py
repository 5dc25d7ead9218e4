"""The run report: a PDF (or PNG pages) for QC and QA, drawn with matplotlib's Agg backend.

Sections, in order: ``header`` (batch, product, operator, times, instruments, config hash,
seal, the figures), ``activity`` (activity against time per dose calibrator, decay-corrected
values at end of synthesis and the yield), ``process`` (process values with the synthesis
steps marked), ``tlc`` (chromatograms with their ROIs shaded, and the RCP table with pass or
fail), ``audit`` (the run's audit entries). Gaps and non-GOOD readings are shaded on every
plot. Every number comes from :func:`daq.runs.figures.summarize`, the function that writes
the export's ``summary.json``; each PNG page carries the section names and those figures as
PNG text chunks (``Sections``, ``Figures``), so a test can read them back from the pages.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from daq.model import Quality, iso
from daq.runs import figures
from daq.runs.store import RunData

SECTIONS = ("header", "activity", "process", "tlc", "audit")
A4 = (8.27, 11.69)
AUDIT_ROWS_PER_PAGE = 45
MAX_TRACES = 6


def _fmt_bq(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for unit, f in (("GBq", 1e9), ("MBq", 1e6), ("kBq", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.4g} {unit}"
    return f"{v:.4g} Bq"


def _verdict(passed: bool | None) -> str:
    """An analysis without a verdict (incomplete trace, holes in an ROI) is neither pass nor fail."""
    return "no verdict" if passed is None else "PASS" if passed else "FAIL"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} %"


def _minutes(ns: int, t0: int) -> float:
    return (ns - t0) / 60e9


def _shade_gaps(ax: Any, spans: list[dict[str, Any]], t0: int, key: str | None = None) -> None:
    for g in spans:
        if key is not None and f"{g['instrument']}/{g['channel']}" != key:
            continue
        colour = "tab:red" if g["quality"] == "BAD" else "tab:orange"
        a, b = _minutes(g["from_ns"], t0), _minutes(g["to_ns"], t0)
        ax.axvspan(a, max(b, a + 0.05), color=colour, alpha=0.25, lw=0)


#: The text drawn on each page (by ``id`` of its figure), saved with PNG pages as ``Text``.
_TEXT: dict[int, list[str]] = {}


def _note(fig: Figure, *lines: str) -> None:
    _TEXT.setdefault(id(fig), []).extend(lines)


def _page(title: str, section: str) -> Figure:
    fig = plt.figure(figsize=A4)
    _note(fig, title)
    fig.suptitle(title, fontsize=12, fontweight="bold", x=0.05, ha="left")
    fig.text(0.95, 0.975, section, ha="right", va="top", fontsize=8, color="grey")
    return fig


def _text_block(fig: Figure, lines: list[str], top: float = 0.93, size: float = 8.0) -> float:
    y = top
    _note(fig, *lines)
    for line in lines:
        fig.text(0.05, y, line, fontsize=size, family="monospace", va="top")
        y -= size / 72 / A4[1] * 1.45
    return y


def _header(data: RunData, summary: dict[str, Any]) -> Figure:
    run = data.run
    fig = _page(f"Run report: batch {summary['batch']}", "header")
    lines = [
        f"run            {summary['run_id']}",
        f"batch          {summary['batch']}",
        f"product        {summary['product']}",
        f"nuclide        {summary['nuclide']}",
        f"operator       {summary['operator']}",
        f"method         {summary['method'] or '-'}",
        f"started        {summary['started']}  by {run.get('started_by')}",
        f"ended          {summary['ended'] or 'OPEN'}  by {run.get('ended_by') or '-'}",
        f"EOS            {summary['eos']}",
        f"config sha256  {summary['config_sha256']}",
        f"seal           {summary['seal'] or 'not sealed'}",
        "",
        "instruments",
    ]
    for name, inst in (run.get("instruments") or {}).items():
        dev = inst.get("device") or {}
        lines.append(
            f"  {name:<16} {inst.get('kind', ''):<18} {dev.get('model', '-')}, "
            f"serial {dev.get('serial') or '-'}, firmware {dev.get('firmware') or '-'}"
        )
    q = summary["quality"]
    lines += [
        "",
        f"readings       {summary['readings']} "
        f"(GOOD {q['GOOD']}, UNCERTAIN {q['UNCERTAIN']}, BAD {q['BAD']})",
        f"gaps/non-GOOD  {len(summary['gaps'])} spans",
        f"clock steps    {summary['clock_steps']}",
        f"audit entries  {summary['audit_entries']}",
        "",
        "dose calibrators (decay-corrected to EOS)",
    ]
    for key, dc in summary["dose_calibrators"].items():
        y = dc.get("yield_percent")
        lines.append(
            f"  {key:<24} {dc.get('nuclide', '-'):<7} first {_fmt_bq(dc.get('first_eos_bq'))}, "
            f"last {_fmt_bq(dc.get('last_eos_bq'))}, yield {'-' if y is None else f'{y:.2f} %'}"
        )
    if not summary["dose_calibrators"]:
        lines.append("  none in this run")
    lines += ["", "t0"]
    lines += [
        f"  {iso(t['ts_ns'])} {t.get('instrument') or ''} {t.get('actor')}: {t.get('reason')}"
        for t in summary["t0"]
    ]
    lines += ["", "annotations"]
    for a in run.get("annotations", []):
        lines.append(f"  {iso(a['ts_ns'])} {a['actor']}: {a['text']} (reason: {a['reason']})")
    if summary["rcp"]:
        lines += ["", "radiochemical purity"]
        for r in summary["rcp"]:
            verdict = _verdict(r["passed"])
            lines.append(
                f"  {r['trace_id']} {r['analysis_id']}: RCP {_pct(r['rcp_percent'])} "
                f"(limit {r['limit_percent']} %) {verdict}{'' if r['current'] else ' (superseded)'}"
            )
    _text_block(fig, lines)
    return fig


def _activity(data: RunData, summary: dict[str, Any], t0: int) -> Figure:
    fig = _page("Activity against time (dose calibrators)", "activity")
    dcs = summary["dose_calibrators"]
    if not dcs:
        _text_block(fig, ["No dose calibrator readings in this run."], top=0.9, size=10)
        return fig
    axes = fig.subplots(len(dcs), 1, squeeze=False)[:, 0]
    for ax, (key, dc) in zip(axes, dcs.items(), strict=True):
        inst, ch = key.split("/", 1)
        rows = [r for r in data.rows("readings") if r["instrument"] == inst and r["channel"] == ch]
        good = [r for r in rows if r["quality"] == Quality.GOOD and r["value"] is not None]
        ax.plot(
            [_minutes(r["acq_ns"], t0) for r in good], [r["value"] / 1e6 for r in good], ".-", ms=2, lw=0.8
        )
        _shade_gaps(ax, summary["gaps"], t0, key)
        eos = _minutes(summary["eos_ns"], t0)
        ax.axvline(eos, color="k", ls="--", lw=0.8)
        if dc.get("last_eos_bq") is not None:
            ax.plot([eos], [dc["last_eos_bq"] / 1e6], "kx")
        y = dc.get("yield_percent")
        title = (
            f"{key} ({dc.get('nuclide', '-')}): at EOS first {_fmt_bq(dc.get('first_eos_bq'))}, "
            f"last {_fmt_bq(dc.get('last_eos_bq'))}, yield {'-' if y is None else f'{y:.2f} %'}"
        )
        ax.set_title(title, fontsize=8)
        _note(fig, title)
        ax.set_xlabel("minutes since run start", fontsize=8)
        ax.set_ylabel("MBq", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def _process(data: RunData, summary: dict[str, Any], t0: int) -> Figure:
    fig = _page("Process values (steps marked)", "process")
    keys = figures.process_channels(data)
    if not keys:
        _text_block(fig, ["No process values in this run."], top=0.9, size=10)
        return fig
    axes = fig.subplots(len(keys), 1, squeeze=False, sharex=True)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        inst, ch = key.split("/", 1)
        rows = [r for r in data.rows("readings") if r["instrument"] == inst and r["channel"] == ch]
        good = [r for r in rows if r["quality"] == Quality.GOOD and r["value"] is not None]
        ax.plot([_minutes(r["acq_ns"], t0) for r in good], [r["value"] for r in good], lw=0.8)
        _shade_gaps(ax, summary["gaps"], t0, key)
        for s in summary["steps"]:
            ax.axvline(_minutes(s["ts_ns"], t0), color="grey", lw=0.5, ls=":")
        unit = rows[0]["unit"] if rows else ""
        ax.set_ylabel(f"{inst}\n{ch}\n{unit}", fontsize=6)
        ax.tick_params(labelsize=7)
    top = axes[0]
    for s in summary["steps"]:
        top.annotate(
            str(s["name"] or s["step"]), (_minutes(s["ts_ns"], t0), 1.0), xycoords=("data", "axes fraction"),
            fontsize=6, rotation=60, va="bottom",
        )  # fmt: skip
    axes[-1].set_xlabel("minutes since run start", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def _jsonish(v: Any) -> Any:
    if isinstance(v, str) and v:
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _tlc(data: RunData, summary: dict[str, Any]) -> Figure:
    fig = _page("Radio-TLC: chromatograms and radiochemical purity", "tlc")
    traces = data.rows("traces")[:MAX_TRACES]
    if not traces:
        _text_block(fig, ["No TLC traces in this run."], top=0.9, size=10)
        return fig
    analyses = data.rows("analyses")
    current = {r["analysis_id"] for r in summary["rcp"] if r["current"]}
    axes = fig.subplots(len(traces) + 1, 1, squeeze=False)[:, 0]
    for ax, tr in zip(axes, traces, strict=False):
        pos = list(_jsonish(tr.get("positions_mm")) or [])
        counts = list(_jsonish(tr.get("counts")) or [])
        ax.plot(pos, counts, lw=0.8)
        params = _jsonish(tr.get("params"))
        params = params if isinstance(params, dict) else {}
        for a in analyses:
            if a.get("trace_id") != tr.get("trace_id") or a.get("analysis_id") not in current:
                continue
            res = _jsonish(a.get("results")) or {}
            # Rf is measured from the origin to the solvent front of the method that integrated.
            lo = float(res.get("origin_mm", params.get("origin_mm", min(pos) if pos else 0.0)))
            hi = float(res.get("front_mm", params.get("front_mm", max(pos) if pos else 1.0)))
            for k, roi in enumerate(res.get("rois", [])):
                a_mm = float(roi.get("mm_from", lo + float(roi["rf_from"]) * (hi - lo)))
                b_mm = float(roi.get("mm_to", lo + float(roi["rf_to"]) * (hi - lo)))
                ax.axvspan(a_mm, b_mm, alpha=0.2, color=f"C{k + 1}", lw=0)
                label = str(roi.get("label", ""))
                trans = ax.get_xaxis_transform()
                ax.text((a_mm + b_mm) / 2, 0.95, label, transform=trans, ha="center", va="top", fontsize=6)
        complete = "" if tr.get("complete") else " (INCOMPLETE)"
        title = f"{tr.get('trace_id')} on {tr.get('instrument')}{complete}"
        ax.set_title(title, fontsize=8)
        _note(fig, title)
        ax.set_xlabel("position (mm)", fontsize=7)
        ax.set_ylabel("counts", fontsize=7)
        ax.tick_params(labelsize=6)
    table_ax = axes[-1]
    table_ax.axis("off")
    cells = [
        [r["trace_id"], r["analysis_id"], f"{r['method']} {r['method_version']}",
         "-" if r["rcp_percent"] is None else f"{r['rcp_percent']:.2f}", str(r["limit_percent"]),
         _verdict(r["passed"]), "current" if r["current"] else "superseded", r["actor"] or ""]
        for r in summary["rcp"]
    ]  # fmt: skip
    if cells:
        t = table_ax.table(
            cellText=cells, colLabels=["trace", "analysis", "method", "RCP %", "limit %", "result", "", "by"],
            colWidths=[0.22, 0.26, 0.12, 0.07, 0.07, 0.08, 0.09, 0.09], loc="upper center",
        )  # fmt: skip
        _note(fig, *(" | ".join(row) for row in cells))
        t.auto_set_font_size(False)
        t.set_fontsize(6)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def _audit_pages(data: RunData) -> list[Figure]:
    rows = data.rows("audit")
    pages = []
    chunks = [rows[i : i + AUDIT_ROWS_PER_PAGE] for i in range(0, len(rows), AUDIT_ROWS_PER_PAGE)] or [[]]
    for n, chunk in enumerate(chunks, 1):
        fig = _page(f"Audit trail of the run ({n}/{len(chunks)})", "audit")
        lines = []
        for a in chunk:
            detail = a.get("detail")
            text = json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""
            text = text if len(text) <= 70 else text[:67] + "..."
            lines.append(
                f"{iso(a['ts_ns'])[:26]} {a['actor'][:14]:<14} {a['action']:<18} {a['subject'] or ''}"
            )
            if text:
                lines.append(f"    {text}")
        if not lines:
            lines = ["No audit entries."]
        _text_block(fig, lines, size=6.5)
        pages.append(fig)
    return pages


def render(data: RunData, out: Path, *, png: bool = False) -> dict[str, Any]:
    """Render the report of ``data`` to ``out`` (a PDF), or to ``out``'s stem ``-pNN.png`` pages.

    Returns ``{"files", "sections", "figures"}``; ``figures`` is :func:`figures.summarize`.
    """
    summary = figures.summarize(data)
    t0 = int(data.run["started_ns"])
    pages: list[tuple[str, Figure]] = [
        ("header", _header(data, summary)),
        ("activity", _activity(data, summary, t0)),
        ("process", _process(data, summary, t0)),
        ("tlc", _tlc(data, summary)),
        *(("audit", f) for f in _audit_pages(data)),
    ]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    figures_json = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    try:
        if png:
            for i, (section, fig) in enumerate(pages, 1):
                path = out.with_name(f"{out.stem}-p{i:02d}.png")
                meta = {
                    "Title": f"run {summary['run_id']}",
                    "Sections": section,
                    "Figures": figures_json,
                    "Text": "\n".join(_TEXT.get(id(fig), [])),
                }
                fig.savefig(path, dpi=110, metadata=meta)
                files.append(str(path))
        else:
            info = {
                "Title": f"Run report {summary['run_id']}",
                "Subject": summary["seal"] or "",
                "Keywords": ",".join(SECTIONS),
            }
            with PdfPages(out, metadata=info) as pdf:
                for _, fig in pages:
                    pdf.savefig(fig)
            files.append(str(out))
    finally:
        for _, fig in pages:
            _TEXT.pop(id(fig), None)
            plt.close(fig)
    return {"files": files, "sections": [s for s, _ in pages], "figures": summary}
