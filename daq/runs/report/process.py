"""The process pages: the configured channel groups on clock-time axes, steps named."""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure

from daq.model import Quality
from daq.runs import figures
from daq.runs.report.frame import (
    Context,
    keep_text,
    new_page,
    shade_gaps,
    time_axis,
)
from daq.runs.store import RunData

#: Channels per process page when no ``[report] process`` groups are configured.
CHANNELS_PER_PAGE = 6


def all_process_channels(data: RunData) -> list[str]:
    """Every process channel of the run (no cap): process units first, then by name."""
    seen: dict[str, str] = {}
    for r in data.rows("readings"):
        if r["unit"] in ("", "Bq") or figures.is_dose_calibrator(r) or r["channel"] in figures.STEP_CHANNELS:
            continue
        seen.setdefault(f"{r['instrument']}/{r['channel']}", r["unit"])
    return sorted(seen, key=lambda k: (seen[k] not in figures.PROCESS_UNITS, k))


def _step_label(s: dict[str, Any]) -> str:
    if s.get("name"):
        return str(s["name"])
    v = s.get("step")
    return f"step {int(v)}" if isinstance(v, float) and v.is_integer() else f"step {v}"


def _process_groups(ctx: Context) -> tuple[list[tuple[str, list[str]]], str]:
    recorded = all_process_channels(ctx.data)
    if ctx.settings.process:
        groups = [(g.title, list(g.channels)) for g in ctx.settings.process]
        shown = {c for _, chans in groups for c in chans}
        rest = [c for c in recorded if c not in shown]
        note = (
            f"{len([c for c in recorded if c in shown])} of {len(recorded)} recorded process channels shown, "
            "as configured in [report] process"
        )
        if rest:
            note += f"; not plotted (all are in the export): {', '.join(rest)}"
        return groups, note
    pages = [recorded[i : i + CHANNELS_PER_PAGE] for i in range(0, len(recorded), CHANNELS_PER_PAGE)]
    groups = [
        (f"channels {i * CHANNELS_PER_PAGE + 1}-{i * CHANNELS_PER_PAGE + len(p)}", p)
        for i, p in enumerate(pages)
    ]
    return groups, f"all {len(recorded)} process channels shown (no [report] process groups configured)"


def process_pages(ctx: Context) -> list[Figure]:
    groups, note = _process_groups(ctx)
    if not groups:
        fig = new_page("Process values", "process")
        fig.text(0.06, 0.9, "No process values in this run.", fontsize=10, va="top")
        keep_text(fig, "No process values in this run.", note)
        return [fig]
    out = []
    steps = ctx.summary["steps"]
    for gi, (title, channels) in enumerate(groups, 1):
        fig = new_page(f"Process values: {title} ({gi} of {len(groups)})", "process")
        y = 0.905
        for part in textwrap.wrap(note, 130):
            fig.text(0.06, y, part, fontsize=7.5, va="top")
            y -= 0.014
        keep_text(fig, note)
        axes = fig.subplots(
            len(channels),
            1,
            squeeze=False,
            sharex=True,
            gridspec_kw={"top": 0.76, "bottom": 0.08, "left": 0.16, "right": 0.94},
        )[:, 0]
        for ax, key in zip(axes, channels, strict=True):
            inst, ch = key.split("/", 1)
            rows = [r for r in ctx.data.rows("readings") if r["instrument"] == inst and r["channel"] == ch]
            good = [r for r in rows if r["quality"] == Quality.GOOD and r["value"] is not None]
            ax.plot([ctx.x(r["acq_ns"]) for r in good], [r["value"] for r in good], lw=0.8)
            if not rows:
                ax.text(
                    0.5,
                    0.5,
                    f"no readings of {key} in this run",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=8,
                )
                keep_text(fig, f"no readings of {key} in this run")
            shade_gaps(ax, ctx, key)
            for s in steps:
                ax.axvline(ctx.x(s["ts_ns"]), color="grey", lw=0.5, ls=":")
            unit = rows[0]["unit"] if rows else ""
            ax.set_ylabel(f"{inst}\n{ch}\n{unit}", fontsize=6)
            ax.tick_params(labelsize=7)
            keep_text(fig, key)
        top = axes[0]
        for k, s in enumerate(steps):
            label = _step_label(s)
            top.annotate(
                label,
                (ctx.x(s["ts_ns"]), 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=6,
                rotation=90,
                va="bottom",
                ha="center",
                xytext=(0, 2 + 10 * (k % 2)),
                textcoords="offset points",
            )
        keep_text(fig, "steps: " + ", ".join(f"{ctx.when(s['ts_ns'])} {_step_label(s)}" for s in steps))
        time_axis(axes[-1], ctx)
        out.append(fig)
    return out
