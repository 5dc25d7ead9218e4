"""The report's frame: what every page shares (the run's context, the site's time zone, number
and time formats), the page furniture (header, footer, watermark), text flowing over pages,
and the table and time-axis helpers the sections draw with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from datetime import UTC, datetime, tzinfo
from typing import Any

from matplotlib import dates as mdates
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from daq import __version__
from daq.runs.qc_settings import ReportSection
from daq.runs.store import RunData

A4 = (8.27, 11.69)
WRAP = 118

#: The text drawn on each page (by ``id`` of its figure), saved with PNG pages as ``Text``.
TEXT: dict[int, list[str]] = {}


def keep_text(fig: Figure, *lines: str) -> None:
    TEXT.setdefault(id(fig), []).extend(lines)


def fmt_bq(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for unit, f in (("GBq", 1e9), ("MBq", 1e6), ("kBq", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.4g} {unit}"
    return f"{v:.4g} Bq"


def fmt_half_life(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, f in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= f:
            return f"{s / f:.5g} {unit}"
    return f"{s:.4g} s"


def verdict_text(passed: bool | None) -> str:
    """An analysis without a verdict (incomplete trace, holes in an ROI) is neither pass nor fail."""
    return "no verdict" if passed is None else "PASS" if passed else "FAIL"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} %"


def jsonish(v: Any) -> Any:
    if isinstance(v, str) and v:
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


@dataclasses.dataclass
class Context:
    """What every page needs: the run, its figures, the site's settings, who generates it."""

    data: RunData
    summary: dict[str, Any]
    settings: ReportSection
    tz: tzinfo
    by: str
    now_ns: int
    signatures: list[dict[str, Any]]
    current: dict[str, str]
    status: str  # APPROVED, REJECTED or DRAFT
    status_reason: str

    def when(self, ns: int | None) -> str:
        """A time for people: the site's time zone, to the second, with the offset."""
        if ns is None:
            return "-"
        dt = datetime.fromtimestamp(ns / 1e9, tz=UTC).astimezone(self.tz)
        return dt.isoformat(sep=" ", timespec="seconds")

    def dt(self, ns: int) -> datetime:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).astimezone(self.tz)

    @staticmethod
    def x(ns: int) -> float:
        """``ns`` on a time axis: matplotlib's date numbers are days since 1970-01-01 UTC."""
        return ns / 86_400e9


def site_tz(name: str | None) -> tzinfo:
    """The named IANA zone, or the system's."""
    if name:
        import zoneinfo

        return zoneinfo.ZoneInfo(name)
    local = datetime.now(UTC).astimezone().tzinfo
    assert local is not None
    return local


# -- page furniture -------------------------------------------------------------------------------


def new_page(title: str, section: str) -> Figure:
    fig = plt.figure(figsize=A4)
    keep_text(fig, title)
    fig.text(0.06, 0.935, title, fontsize=13, fontweight="bold", va="top")
    fig.text(0.94, 0.935, section, ha="right", va="top", fontsize=8, color="grey")
    return fig


def furnish(fig: Figure, ctx: Context, page: int, pages: int) -> None:
    """Header, footer and watermark of one page."""
    s = ctx.summary
    seal = f"seal {s['seal'][:16]}..." if s["seal"] else "NOT SEALED"
    head = f"{s['product'] or '-'}  |  batch {s['batch'] or '-'}  |  run {s['run_id']}  |  {seal}"
    foot_l = f"generated {ctx.when(ctx.now_ns)} by {ctx.by}  |  hotcell-daq {__version__}"
    foot_r = f"page {page} of {pages}"
    fig.text(0.06, 0.975, head, fontsize=7.5, va="top")
    fig.text(0.94, 0.975, ctx.status, fontsize=7.5, va="top", ha="right", fontweight="bold")
    fig.add_artist(Line2D([0.06, 0.94], [0.962, 0.962], lw=0.6, color="black"))
    fig.add_artist(Line2D([0.06, 0.94], [0.035, 0.035], lw=0.6, color="black"))
    fig.text(0.06, 0.028, foot_l, fontsize=7, va="top")
    fig.text(0.94, 0.028, foot_r, fontsize=7, va="top", ha="right")
    keep_text(fig, head, foot_l, foot_r)
    if ctx.status != "APPROVED":
        mark = "DRAFT" if ctx.status == "DRAFT" else "REJECTED"
        fig.text(
            0.5,
            0.5,
            mark,
            fontsize=96 if mark == "DRAFT" else 72,
            color="tab:red",
            alpha=0.18,
            rotation=45,
            ha="center",
            va="center",
            fontweight="bold",
            zorder=100,
        )
        keep_text(fig, mark)


class Flow:
    """Text laid out top to bottom on as many pages as it takes (never cut)."""

    def __init__(self, title: str, section: str, top: float = 0.9) -> None:
        self.title, self.section, self.top = title, section, top
        self.pages: list[Figure] = []
        self.y = 0.0
        self._new()

    def _new(self) -> None:
        n = len(self.pages)
        fig = new_page(self.title + (f" (continued, {n + 1})" if n else ""), self.section)
        self.pages.append(fig)
        self.y = self.top

    def need(self, height: float) -> None:
        if self.y - height < 0.06:
            self._new()

    def heading(self, text: str) -> None:
        self.need(0.05)
        self.y -= 0.008
        self.pages[-1].text(0.06, self.y, text, fontsize=10.5, fontweight="bold", va="top")
        keep_text(self.pages[-1], text)
        self.y -= 0.022

    def kv(self, label: str, value: str, *, width: int = 84) -> None:
        lines = textwrap.wrap(value, width) or ["-"]
        self.need(0.0135 * len(lines))
        fig = self.pages[-1]
        fig.text(0.06, self.y, label, fontsize=8.5, color="dimgrey", va="top")
        for line in lines:
            fig.text(0.27, self.y, line, fontsize=8.5, va="top")
            self.y -= 0.0135
        keep_text(fig, f"{label}: {value}")

    def line(self, text: str, *, mono: bool = False, size: float = 8.0, indent: float = 0.06) -> None:
        width = int(WRAP * 7.0 / size) if mono else int(WRAP * 6.2 / size)
        for part in textwrap.wrap(text, width, subsequent_indent="    ") or [""]:
            self.need(size / 72 / A4[1] * 1.5)
            self.pages[-1].text(
                indent, self.y, part, fontsize=size, va="top", family="monospace" if mono else None
            )
            keep_text(self.pages[-1], part)
            self.y -= size / 72 / A4[1] * 1.5

    def gap(self, h: float = 0.008) -> None:
        self.y -= h


def clock_lines(ctx: Context) -> tuple[str, list[str]]:
    clock = ctx.data.run.get("clock") or {}
    sync = clock.get("synchronised")
    state = (
        "synchronised" if sync else "NOT synchronised" if sync is False else "unknown"
    ) + f" at run start (source {clock.get('source', '-')})"
    steps = []
    for a in ctx.data.rows("audit"):
        if a["action"] == "clock_step":
            d = jsonish(a.get("detail")) or {}
            step = d.get("step_s", d.get("step_ns", "?"))
            steps.append(
                f"{ctx.when(a['ts_ns'])}: clock stepped by {step} (s)"
                if "step_s" in d
                else f"{ctx.when(a['ts_ns'])}: clock step {json.dumps(d, sort_keys=True)}"
            )
    return state, steps


def draw_table(
    fig: Figure,
    rect: tuple[float, float, float, float],
    header: list[str],
    rows: list[list[str]],
    widths: list[float],
    size: float = 7.0,
) -> None:
    ax = fig.add_axes(rect)
    ax.axis("off")
    if rows:
        t = ax.table(cellText=rows, colLabels=header, colWidths=widths, loc="upper center", cellLoc="left")
        t.auto_set_font_size(False)
        t.set_fontsize(size)
        t.scale(1, 1.25)
    keep_text(fig, " | ".join(header), *(" | ".join(r) for r in rows))


def time_axis(ax: Any, ctx: Context) -> None:
    lo, hi = ax.get_xlim()
    fmt = "%H:%M" if (hi - lo) * 86400 > 3600 else "%H:%M:%S"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=ctx.tz))  # type: ignore[no-untyped-call]
    ax.set_xlabel(f"clock time ({ctx.dt(int(ctx.data.run['started_ns'])).strftime('%Z, UTC%z')})", fontsize=7)


def shade_gaps(ax: Any, ctx: Context, key: str | None) -> None:
    for g in ctx.summary["gaps"]:
        if key is not None and f"{g['instrument']}/{g['channel']}" != key:
            continue
        colour = "tab:red" if g["quality"] == "BAD" else "tab:orange"
        a, b = g["from_ns"], max(g["to_ns"], g["from_ns"] + 3 * 10**9)
        ax.axvspan(ctx.x(a), ctx.x(b), color=colour, alpha=0.25, lw=0)
