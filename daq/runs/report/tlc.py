"""The radio-TLC pages: one per chromatogram, with its ROIs, verdict and analysis history."""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure

from daq.runs.report.frame import (
    Context,
    draw_table,
    fmt_pct,
    jsonish,
    keep_text,
    new_page,
    verdict_text,
)
from daq.tlc.colours import KIND_COLOURS, OTHER_COLOUR


def _roi_mm(
    roi: dict[str, Any], res: dict[str, Any], trace: dict[str, Any]
) -> tuple[float | None, float | None]:
    """An ROI's span in mm: as the analysis stored it, else from its Rf between origin and front."""
    if roi.get("mm_from") is not None and roi.get("mm_to") is not None:
        return float(roi["mm_from"]), float(roi["mm_to"])
    params = jsonish(trace.get("params"))
    params = params if isinstance(params, dict) else {}
    origin = res.get("origin_mm", params.get("origin_mm"))
    front = res.get("front_mm", params.get("front_mm"))
    if origin is None or front is None or "rf_from" not in roi:
        return None, None
    span = float(front) - float(origin)
    return float(origin) + float(roi["rf_from"]) * span, float(origin) + float(roi["rf_to"]) * span


def tlc_pages(ctx: Context) -> list[Figure]:
    traces = ctx.data.rows("traces")
    if not traces:
        fig = new_page("Radio-TLC", "tlc")
        fig.text(0.06, 0.9, "No TLC traces in this run.", fontsize=10, va="top")
        keep_text(fig, "No TLC traces in this run.")
        return [fig]
    analyses = ctx.data.rows("analyses")
    out = []
    for n, tr in enumerate(traces, 1):
        fig = new_page(f"Radio-TLC {n} of {len(traces)}: {tr.get('trace_id')}", "tlc")
        history = [a for a in analyses if a.get("trace_id") == tr.get("trace_id")]
        current = history[-1] if history else None
        res = (jsonish(current.get("results")) or {}) if current else {}
        pos = list(jsonish(tr.get("positions_mm")) or [])
        counts = list(jsonish(tr.get("counts")) or [])
        ax = fig.add_axes((0.1, 0.56, 0.84, 0.3))
        ax.step(pos, counts, where="mid", color="black", linewidth=0.9, label="counts")
        for r in res.get("rois", []):
            colour = KIND_COLOURS.get(r.get("kind", ""), OTHER_COLOUR)
            if "mm_from" in r:
                ax.axvspan(
                    r["mm_from"], r["mm_to"], color=colour, alpha=0.2, label=f"{r['label']} ({r['kind']})"
                )
        bg = (res.get("background") or {}) if isinstance(res.get("background"), dict) else {}
        if bg.get("counts_per_point"):
            ax.axhline(
                bg["counts_per_point"], color="tab:blue", linestyle=":", linewidth=1, label="background"
            )
        for key in ("origin_mm", "front_mm"):
            if res.get(key) is not None:
                ax.axvline(res[key], color="grey", linestyle="--", linewidth=0.8)
        complete = "complete" if tr.get("complete") else "INCOMPLETE"
        started = ctx.when(tr.get("started_ns"))
        title = f"{tr.get('trace_id')} on {tr.get('instrument')}, {complete}, started {started}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("position (mm)", fontsize=7)
        ax.set_ylabel("counts per position", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
        keep_text(fig, title)
        y = 0.49
        if current is None:
            info = ["No analysis of this trace (no method was configured for the scan)."]
        else:
            info = [
                f"method {current.get('method')} version {current.get('method_version')}; analysis "
                f"{current.get('analysis_id')} at {ctx.when(current.get('ts_ns'))} by {current.get('actor')}",
                f"RCP {fmt_pct(res.get('rcp_percent'))} (limit >= {res.get('limit_percent')} %): "
                f"{verdict_text(res.get('passed'))}",
            ]
            info += [f"warning: {w}" for w in res.get("warnings", [])]
        for text in info:
            fig.text(
                0.06, y, text, fontsize=8.5, va="top", fontweight="bold" if text.startswith("RCP") else None
            )
            y -= 0.018
        keep_text(fig, *info)
        rows = [
            [
                str(r.get("label")),
                str(r.get("kind")),
                f"{r.get('rf_from', 0):.2f}-{r.get('rf_to', 0):.2f}",
                f"{r.get('gross_counts', 0):g}",
                f"{r.get('background_counts', 0):.1f}",
                f"{r.get('net_counts', 0):.1f}",
                "-" if r.get("percent") is None else f"{r['percent']:.2f}",
            ]
            for r in res.get("rois", [])
        ]
        if rows:
            draw_table(
                fig,
                (0.06, y - 0.02 - 0.022 * (len(rows) + 1), 0.88, 0.022 * (len(rows) + 1)),
                ["ROI", "kind", "Rf range", "gross", "background", "net", "%"],
                rows,
                [0.18, 0.12, 0.16, 0.13, 0.14, 0.14, 0.13],
            )
            y -= 0.04 + 0.022 * (len(rows) + 1)
        hist = [
            [
                str(a.get("analysis_id")),
                f"{a.get('method')} {a.get('method_version')}",
                fmt_pct((jsonish(a.get("results")) or {}).get("rcp_percent")),
                verdict_text((jsonish(a.get("results")) or {}).get("passed")),
                "current" if a is current else "superseded",
                str(a.get("actor") or ""),
                ctx.when(a.get("ts_ns")),
            ]
            for a in history
        ]
        if hist:
            fig.text(
                0.06,
                y,
                "Analysis history (re-integration appends; nothing is overwritten)",
                fontsize=8.5,
                va="top",
                fontweight="bold",
            )
            y -= 0.02
            draw_table(
                fig,
                (0.06, y - 0.022 * (len(hist) + 1), 0.88, 0.022 * (len(hist) + 1)),
                ["analysis", "method", "RCP", "verdict", "", "by", "at"],
                hist,
                [0.3, 0.14, 0.09, 0.08, 0.1, 0.09, 0.2],
                size=6.5,
            )
            y -= 0.03 + 0.022 * (len(hist) + 1)
            for a in history:
                for part in textwrap.wrap(f"{a.get('analysis_id')}: reason: {a.get('reason') or '-'}", 110):
                    fig.text(0.06, y, part, fontsize=7, va="top")
                    keep_text(fig, part)
                    y -= 0.014
        out.append(fig)
    return out
