"""The activity page: activities at the reference time, the yield, activity against time."""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure

from daq.model import Quality
from daq.physics import NUCLIDE_TABLE_SOURCE, NUCLIDE_TABLE_VERSION
from daq.runs.report.frame import (
    Context,
    draw_table,
    fmt_bq,
    fmt_half_life,
    fmt_pct,
    keep_text,
    new_page,
    shade_gaps,
    time_axis,
)


def activity_page(
    ctx: Context, table: list[dict[str, Any]], ref: tuple[int, str], yld: dict[str, Any]
) -> Figure:
    fig = new_page("Activity and radiochemical yield", "activity")
    y = 0.9
    lines = [
        f"Reference time: {ctx.when(ref[0])}, {ref[1]}.",
        "Decay correction A(ref) = A(t) exp(-ln2 (ref - t) / T1/2); half-lives from the nuclide table",
        f"{NUCLIDE_TABLE_VERSION} ({NUCLIDE_TABLE_SOURCE}).",
    ]
    for text in lines:
        fig.text(0.06, y, text, fontsize=8, va="top")
        y -= 0.018
    keep_text(fig, *lines)
    rows = [
        [
            e["channel"],
            e["nuclide_setting"] or "-",
            fmt_bq(e["measured_bq"]),
            ctx.when(e["measured_ns"]),
            fmt_bq(e["corrected_bq"]),
            fmt_half_life(e["half_life_s"]),
            f"MISMATCH (run {e['run_nuclide']})" if e["mismatch"] else "ok",
        ]
        for e in table
    ]
    if rows:
        draw_table(
            fig,
            (0.06, y - 0.01 - 0.024 * (len(rows) + 1), 0.88, 0.024 * (len(rows) + 1)),
            [
                "channel",
                "nuclide set",
                "measured",
                "measured at",
                "at reference",
                "half-life",
                "nuclide check",
            ],
            rows,
            [0.17, 0.09, 0.11, 0.22, 0.11, 0.09, 0.21],
        )
    else:
        fig.text(0.06, y, "No dose calibrator readings in this run.", fontsize=9, va="top")
        keep_text(fig, "No dose calibrator readings in this run.")
    ytext = y - 0.04 - 0.024 * (len(rows) + 1)
    if rows:
        fig.text(
            0.06,
            ytext + 0.018,
            "measured: the channel's last GOOD reading",
            fontsize=7,
            va="top",
            color="dimgrey",
        )
    ylines = ["Radiochemical yield (product activity / starting activity):"]
    if not yld.get("configured"):
        ylines.append("  not configured: name the channels in [report] yield_start and yield_product.")
    elif yld.get("uncorrected_percent") is None:
        ylines.append(f"  no figure: {yld.get('problem')}")
    else:
        for name in ("start", "product"):
            p = yld[name]
            ylines.append(
                f"  {name}: {p['channel']} ({p['take']} GOOD reading) {fmt_bq(p['measured_bq'])} at "
                f"{ctx.when(p['measured_ns'])}; at reference {fmt_bq(p['corrected_bq'])} "
                f"({p['nuclide'] or '-'}, half-life {fmt_half_life(p['half_life_s'])})"
            )
        ylines.append(
            f"  yield, decay-corrected to the reference time: {fmt_pct(yld.get('corrected_percent'))}"
        )
        ylines.append(f"  yield, not decay-corrected: {fmt_pct(yld['uncorrected_percent'])}")
    for i, text in enumerate(ylines):
        for part in textwrap.wrap(text, 112, subsequent_indent="      ") or [""]:
            fig.text(0.06, ytext, part, fontsize=8, va="top", fontweight="bold" if i == 0 else None)
            ytext -= 0.018
    keep_text(fig, *ylines)
    ax = fig.add_axes((0.1, 0.08, 0.84, ytext - 0.14))
    for key in (e["channel"] for e in table):
        inst, ch = key.split("/", 1)
        good = [
            r
            for r in ctx.data.rows("readings")
            if r["instrument"] == inst
            and r["channel"] == ch
            and r["quality"] == Quality.GOOD
            and r["value"] is not None
        ]
        ax.plot(
            [ctx.x(r["acq_ns"]) for r in good],
            [r["value"] / 1e6 for r in good],
            ".-",
            ms=2,
            lw=0.8,
            label=key,
        )
    shade_gaps(ax, ctx, None)
    ax.axvline(ctx.x(ref[0]), color="k", ls="--", lw=0.8)
    ax.set_ylabel("MBq", fontsize=8)
    ax.set_title("Activity against time (dose calibrators); dashed: reference time", fontsize=8)
    ax.tick_params(labelsize=7)
    time_axis(ax, ctx)
    if table:
        ax.legend(fontsize=7)
    return fig
