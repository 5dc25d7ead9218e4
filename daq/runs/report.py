"""The run report: a controlled document for the batch record (PDF, or PNG pages), drawn with
matplotlib's Agg backend.

Every page carries a header (product, batch, run id, seal prefix) and a footer ("page x of y",
when and by whom it was generated, in the site's time zone with its offset, and the
hotcell-daq version). Until the run is sealed *and* approved by a signature covering its
current analysis versions, every page is watermarked DRAFT (REJECTED after a rejection).

Sections, in order:

- ``header``: the title page: batch, product, times, instruments, config hash, seal, the
  clock's sync state and clock steps, results (yield, RCP), annotations, t0, and the signature
  block (each signature's printed name, date and time, meaning; a signature that covers an
  analysis version superseded by a re-integration says so);
- ``activity``: the activity table at the reference time (measured, decay-corrected, half-life
  and its source, a flag when a calibrator's nuclide differs from the run's), the
  radiochemical yield as ``[report]`` defines it, and activity against clock time;
- ``process``: the channels ``[report] process`` names, grouped and ordered as configured
  (else every process channel, on as many pages as needed), with the synthesis steps named
  from the map's enum, on clock-time axes;
- ``tlc``: one page per chromatogram, drawn as ``daq tlc show`` draws it, with the per-ROI
  table, the method and version, the verdict and the analysis history;
- ``alarms``: alarm readings, the limit alarms of the alarm journal raised during the run
  (with who acknowledged them), gaps (non-GOOD spans) and clock steps, all of them;
- ``audit``: the run's audit trail, every entry in full (wrapped, never cut).

Nothing is dropped silently: where a list is limited the page says "n of m shown" and where
the rest is. Times are in the site's time zone (``daemon.timezone``, default the system's)
with the offset. The figures of :func:`daq.runs.figures.summarize` (the export's
``summary.json``) travel with each PNG page as text chunks (``Sections``, ``Figures``, ``QC``,
``Text``) so a test can read them back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import dates as mdates
from matplotlib import pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from daq import __version__
from daq.alarms.store import fold
from daq.model import Quality
from daq.physics import NUCLIDE_TABLE_SOURCE, NUCLIDE_TABLE_VERSION
from daq.runs import figures, qc_figures
from daq.runs.qc_settings import ReportSection
from daq.runs.signatures import decode, signature_status
from daq.runs.store import RunData
from daq.tlc.colours import KIND_COLOURS, OTHER_COLOUR

SECTIONS = ("header", "activity", "process", "tlc", "alarms", "audit")
A4 = (8.27, 11.69)
#: Channels per process page when no ``[report] process`` groups are configured.
CHANNELS_PER_PAGE = 6
LINES_PER_PAGE = 88
WRAP = 118

#: The text drawn on each page (by ``id`` of its figure), saved with PNG pages as ``Text``.
_TEXT: dict[int, list[str]] = {}


def _note(fig: Figure, *lines: str) -> None:
    _TEXT.setdefault(id(fig), []).extend(lines)


def _fmt_bq(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for unit, f in (("GBq", 1e9), ("MBq", 1e6), ("kBq", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.4g} {unit}"
    return f"{v:.4g} Bq"


def _half_life(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, f in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= f:
            return f"{s / f:.5g} {unit}"
    return f"{s:.4g} s"


def _verdict(passed: bool | None) -> str:
    """An analysis without a verdict (incomplete trace, holes in an ROI) is neither pass nor fail."""
    return "no verdict" if passed is None else "PASS" if passed else "FAIL"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} %"


def _jsonish(v: Any) -> Any:
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


def _current_analyses(data: RunData) -> dict[str, str]:
    latest: dict[str, tuple[str, str]] = {}
    for a in data.rows("analyses"):
        h = a.get("hash")
        latest[str(a["trace_id"])] = (str(a["analysis_id"]), h.hex() if isinstance(h, bytes) else str(h))
    return dict(latest.values())


def _status(run: dict[str, Any], sigs: list[dict[str, Any]], current: dict[str, str]) -> tuple[str, str]:
    if not run.get("seal"):
        return "DRAFT", "the run is open (not sealed)"
    live = [s for s in sigs if signature_status(s, current)["covers_current"]]
    last = next((s for s in reversed(live) if s["meaning"] in ("approved", "rejected")), None)
    if last is None:
        if any(s["meaning"] in ("approved", "rejected") for s in sigs):
            return "DRAFT", "the approval covers an earlier analysis version (re-integrated since)"
        return "DRAFT", "sealed, not approved"
    if last["meaning"] == "rejected":
        return "REJECTED", f"rejected by {last['printed_name']}"
    return "APPROVED", f"approved by {last['printed_name']}"


# -- page furniture -------------------------------------------------------------------------------


def _page(title: str, section: str) -> Figure:
    fig = plt.figure(figsize=A4)
    _note(fig, title)
    fig.text(0.06, 0.935, title, fontsize=13, fontweight="bold", va="top")
    fig.text(0.94, 0.935, section, ha="right", va="top", fontsize=8, color="grey")
    return fig


def _furnish(fig: Figure, ctx: Context, page: int, pages: int) -> None:
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
    _note(fig, head, foot_l, foot_r)
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
        _note(fig, mark)


class Flow:
    """Text laid out top to bottom on as many pages as it takes (never cut)."""

    def __init__(self, title: str, section: str, top: float = 0.9) -> None:
        self.title, self.section, self.top = title, section, top
        self.pages: list[Figure] = []
        self.y = 0.0
        self._new()

    def _new(self) -> None:
        n = len(self.pages)
        fig = _page(self.title + (f" (continued, {n + 1})" if n else ""), self.section)
        self.pages.append(fig)
        self.y = self.top

    def need(self, height: float) -> None:
        if self.y - height < 0.06:
            self._new()

    def heading(self, text: str) -> None:
        self.need(0.05)
        self.y -= 0.008
        self.pages[-1].text(0.06, self.y, text, fontsize=10.5, fontweight="bold", va="top")
        _note(self.pages[-1], text)
        self.y -= 0.022

    def kv(self, label: str, value: str, *, width: int = 84) -> None:
        lines = textwrap.wrap(value, width) or ["-"]
        self.need(0.0135 * len(lines))
        fig = self.pages[-1]
        fig.text(0.06, self.y, label, fontsize=8.5, color="dimgrey", va="top")
        for line in lines:
            fig.text(0.27, self.y, line, fontsize=8.5, va="top")
            self.y -= 0.0135
        _note(fig, f"{label}: {value}")

    def line(self, text: str, *, mono: bool = False, size: float = 8.0, indent: float = 0.06) -> None:
        width = int(WRAP * 7.0 / size) if mono else int(WRAP * 6.2 / size)
        for part in textwrap.wrap(text, width, subsequent_indent="    ") or [""]:
            self.need(size / 72 / A4[1] * 1.5)
            self.pages[-1].text(
                indent, self.y, part, fontsize=size, va="top", family="monospace" if mono else None
            )
            _note(self.pages[-1], part)
            self.y -= size / 72 / A4[1] * 1.5

    def gap(self, h: float = 0.008) -> None:
        self.y -= h


# -- title page ------------------------------------------------------------------------------------


def _clock_lines(ctx: Context) -> tuple[str, list[str]]:
    clock = ctx.data.run.get("clock") or {}
    sync = clock.get("synchronised")
    state = (
        "synchronised" if sync else "NOT synchronised" if sync is False else "unknown"
    ) + f" at run start (source {clock.get('source', '-')})"
    steps = []
    for a in ctx.data.rows("audit"):
        if a["action"] == "clock_step":
            d = _jsonish(a.get("detail")) or {}
            step = d.get("step_s", d.get("step_ns", "?"))
            steps.append(
                f"{ctx.when(a['ts_ns'])}: clock stepped by {step} (s)"
                if "step_s" in d
                else f"{ctx.when(a['ts_ns'])}: clock step {json.dumps(d, sort_keys=True)}"
            )
    return state, steps


def _title(ctx: Context, yield_fig: dict[str, Any]) -> list[Figure]:
    s, run = ctx.summary, ctx.data.run
    flow = Flow("Batch record: run report", "header", top=0.905)
    fig = flow.pages[0]
    fig.text(0.06, 0.905, f"{s['product'] or '-'}", fontsize=15, va="top")
    fig.text(
        0.06,
        0.878,
        f"batch {s['batch'] or '-'}   |   {ctx.status}: {ctx.status_reason}",
        fontsize=10,
        va="top",
        color="tab:red" if ctx.status != "APPROVED" else "tab:green",
        fontweight="bold",
    )
    _note(fig, f"{ctx.status}: {ctx.status_reason}")
    flow.y = 0.85
    flow.heading("Batch")
    for label, value in (
        ("run id", s["run_id"]),
        ("batch", s["batch"]),
        ("product", s["product"]),
        ("nuclide", s["nuclide"]),
        ("operator", s["operator"]),
        ("method", s["method"] or "-"),
    ):
        flow.kv(label, str(value if value is not None else "-"))
    flow.heading(f"Times (site time zone {ctx.dt(int(run['started_ns'])).tzname()})")
    flow.kv("started", f"{ctx.when(run['started_ns'])} by {run.get('started_by') or '-'}")
    ended = ctx.when(run.get("ended_ns")) if run.get("ended_ns") else "OPEN (run not closed)"
    flow.kv("ended", f"{ended}" + (f" by {run['ended_by']}" if run.get("ended_by") else ""))
    flow.kv("EOS", ctx.when(s["eos_ns"]))
    for t in run.get("t0") or []:
        flow.kv(
            "t0", f"{ctx.when(t['ts_ns'])} {t.get('instrument') or ''} by {t.get('actor')}: {t.get('reason')}"
        )
    flow.heading("Integrity")
    flow.kv("config sha256", str(s["config_sha256"] or "-"))
    flow.kv("seal", str(s["seal"] or "not sealed (the run is open)"))
    state, steps = _clock_lines(ctx)
    flow.kv("clock", state)
    flow.kv("clock steps", f"{len(steps)}" + (": " + "; ".join(steps) if steps else " (none recorded)"))
    q = s["quality"]
    flow.kv(
        "readings",
        f"{s['readings']} (GOOD {q['GOOD']}, UNCERTAIN {q['UNCERTAIN']}, BAD {q['BAD']}); "
        f"{len(s['gaps'])} gap/non-GOOD span(s), listed under alarms",
    )
    flow.heading("Instruments")
    for name, inst in (run.get("instruments") or {}).items():
        dev = inst.get("device") or {}
        flow.kv(
            name,
            f"{inst.get('kind', '')}: {dev.get('model', '-')}, serial {dev.get('serial') or '-'}, "
            f"firmware {dev.get('firmware') or '-'}",
        )
    if not run.get("instruments"):
        flow.line("none recorded")
    flow.heading("Results")
    if yield_fig.get("configured"):
        if yield_fig.get("uncorrected_percent") is not None:
            flow.kv(
                "radiochemical yield",
                f"{_pct(yield_fig.get('corrected_percent'))} decay-corrected, "
                f"{_pct(yield_fig['uncorrected_percent'])} not corrected",
            )
        else:
            flow.kv("radiochemical yield", f"no figure: {yield_fig.get('problem')}")
    else:
        flow.kv("radiochemical yield", "not configured ([report] yield_start and yield_product)")
    current = [r for r in s["rcp"] if r["current"]]
    for r in current:
        flow.kv(
            "RCP",
            f"{r['trace_id']}: {_pct(r['rcp_percent'])} (limit {r['limit_percent']} %) "
            f"{_verdict(r['passed'])}, {r['method']} v{r['method_version']}",
        )
    if not current:
        flow.kv("RCP", "no radio-TLC analysis in this run")
    annotations = run.get("annotations") or []
    flow.heading(f"Annotations ({len(annotations)})")
    for a in annotations:
        flow.line(f"{ctx.when(a['ts_ns'])} {a['actor']}: {a['text']} (reason: {a['reason']})")
    _signature_block(flow, ctx)
    return flow.pages


def _signature_block(flow: Flow, ctx: Context) -> None:
    flow.heading("Signatures")
    for sig in ctx.signatures:
        st = signature_status(sig, ctx.current)
        flow.need(0.075)
        fig = flow.pages[-1]
        fig.add_artist(
            Rectangle((0.06, flow.y - 0.062), 0.88, 0.064, fill=False, lw=0.6, transform=fig.transFigure)
        )
        flow.y -= 0.004
        head = f"{sig['meaning'].upper()}  {sig['printed_name']} ({sig['user_id']})  {ctx.when(sig['ts_ns'])}"
        flow.line(head, size=9.5, indent=0.075)
        clock = sig.get("clock") or {}
        sync = clock.get("synchronised")
        covers = ", ".join(sorted(sig["analyses"])) or "no TLC analysis"
        flow.line(
            f"signs seal {sig['seal'][:24]}... and analysis version(s) {covers}; clock "
            f"{'synchronised' if sync else 'NOT synchronised' if sync is False else 'state unknown'}",
            indent=0.075,
        )
        if not st["covers_current"]:
            flow.line(
                f"covers the earlier analysis version(s) {', '.join(st['superseded']) or '-'}; "
                f"re-integrated since (current: {', '.join(st['uncovered']) or '-'})",
                indent=0.075,
            )
        flow.line(f"comment: {sig.get('comment') or '-'}", indent=0.075)
        flow.y -= 0.02
    signed = {s["meaning"] for s in ctx.signatures if signature_status(s, ctx.current)["covers_current"]}
    for meaning in ("reviewed", "approved"):
        if meaning not in signed and not (meaning == "approved" and "rejected" in signed):
            flow.line(f"{meaning.upper()} by: ______________________  (not signed)", size=9)
    if not ctx.signatures:
        flow.line(
            "No signatures: sign with `daq runs sign RUN --meaning reviewed|approved|rejected`.", size=8
        )


# -- activity --------------------------------------------------------------------------------------


def _table(
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
    _note(fig, " | ".join(header), *(" | ".join(r) for r in rows))


def _time_axis(ax: Any, ctx: Context) -> None:
    lo, hi = ax.get_xlim()
    fmt = "%H:%M" if (hi - lo) * 86400 > 3600 else "%H:%M:%S"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=ctx.tz))  # type: ignore[no-untyped-call]
    ax.set_xlabel(f"clock time ({ctx.dt(int(ctx.data.run['started_ns'])).strftime('%Z, UTC%z')})", fontsize=7)


def _activity(ctx: Context, table: list[dict[str, Any]], ref: tuple[int, str], yld: dict[str, Any]) -> Figure:
    fig = _page("Activity and radiochemical yield", "activity")
    y = 0.9
    lines = [
        f"Reference time: {ctx.when(ref[0])}, {ref[1]}.",
        "Decay correction A(ref) = A(t) exp(-ln2 (ref - t) / T1/2); half-lives from the nuclide table",
        f"{NUCLIDE_TABLE_VERSION} ({NUCLIDE_TABLE_SOURCE}).",
    ]
    for text in lines:
        fig.text(0.06, y, text, fontsize=8, va="top")
        y -= 0.018
    _note(fig, *lines)
    rows = [
        [
            e["channel"],
            e["nuclide_setting"] or "-",
            _fmt_bq(e["measured_bq"]),
            ctx.when(e["measured_ns"]),
            _fmt_bq(e["corrected_bq"]),
            _half_life(e["half_life_s"]),
            f"MISMATCH (run {e['run_nuclide']})" if e["mismatch"] else "ok",
        ]
        for e in table
    ]
    if rows:
        _table(
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
        _note(fig, "No dose calibrator readings in this run.")
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
                f"  {name}: {p['channel']} ({p['take']} GOOD reading) {_fmt_bq(p['measured_bq'])} at "
                f"{ctx.when(p['measured_ns'])}; at reference {_fmt_bq(p['corrected_bq'])} "
                f"({p['nuclide'] or '-'}, half-life {_half_life(p['half_life_s'])})"
            )
        ylines.append(f"  yield, decay-corrected to the reference time: {_pct(yld.get('corrected_percent'))}")
        ylines.append(f"  yield, not decay-corrected: {_pct(yld['uncorrected_percent'])}")
    for i, text in enumerate(ylines):
        for part in textwrap.wrap(text, 112, subsequent_indent="      ") or [""]:
            fig.text(0.06, ytext, part, fontsize=8, va="top", fontweight="bold" if i == 0 else None)
            ytext -= 0.018
    _note(fig, *ylines)
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
    _shade_gaps(ax, ctx, None)
    ax.axvline(ctx.x(ref[0]), color="k", ls="--", lw=0.8)
    ax.set_ylabel("MBq", fontsize=8)
    ax.set_title("Activity against time (dose calibrators); dashed: reference time", fontsize=8)
    ax.tick_params(labelsize=7)
    _time_axis(ax, ctx)
    if table:
        ax.legend(fontsize=7)
    return fig


def _shade_gaps(ax: Any, ctx: Context, key: str | None) -> None:
    for g in ctx.summary["gaps"]:
        if key is not None and f"{g['instrument']}/{g['channel']}" != key:
            continue
        colour = "tab:red" if g["quality"] == "BAD" else "tab:orange"
        a, b = g["from_ns"], max(g["to_ns"], g["from_ns"] + 3 * 10**9)
        ax.axvspan(ctx.x(a), ctx.x(b), color=colour, alpha=0.25, lw=0)


# -- process ---------------------------------------------------------------------------------------


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


def _process(ctx: Context) -> list[Figure]:
    groups, note = _process_groups(ctx)
    if not groups:
        fig = _page("Process values", "process")
        fig.text(0.06, 0.9, "No process values in this run.", fontsize=10, va="top")
        _note(fig, "No process values in this run.", note)
        return [fig]
    out = []
    steps = ctx.summary["steps"]
    for gi, (title, channels) in enumerate(groups, 1):
        fig = _page(f"Process values: {title} ({gi} of {len(groups)})", "process")
        y = 0.905
        for part in textwrap.wrap(note, 130):
            fig.text(0.06, y, part, fontsize=7.5, va="top")
            y -= 0.014
        _note(fig, note)
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
                _note(fig, f"no readings of {key} in this run")
            _shade_gaps(ax, ctx, key)
            for s in steps:
                ax.axvline(ctx.x(s["ts_ns"]), color="grey", lw=0.5, ls=":")
            unit = rows[0]["unit"] if rows else ""
            ax.set_ylabel(f"{inst}\n{ch}\n{unit}", fontsize=6)
            ax.tick_params(labelsize=7)
            _note(fig, key)
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
        _note(fig, "steps: " + ", ".join(f"{ctx.when(s['ts_ns'])} {_step_label(s)}" for s in steps))
        _time_axis(axes[-1], ctx)
        out.append(fig)
    return out


# -- radio-TLC -------------------------------------------------------------------------------------


def _roi_mm(
    roi: dict[str, Any], res: dict[str, Any], trace: dict[str, Any]
) -> tuple[float | None, float | None]:
    """An ROI's span in mm: as the analysis stored it, else from its Rf between origin and front."""
    if roi.get("mm_from") is not None and roi.get("mm_to") is not None:
        return float(roi["mm_from"]), float(roi["mm_to"])
    params = _jsonish(trace.get("params"))
    params = params if isinstance(params, dict) else {}
    origin = res.get("origin_mm", params.get("origin_mm"))
    front = res.get("front_mm", params.get("front_mm"))
    if origin is None or front is None or "rf_from" not in roi:
        return None, None
    span = float(front) - float(origin)
    return float(origin) + float(roi["rf_from"]) * span, float(origin) + float(roi["rf_to"]) * span


def _tlc(ctx: Context) -> list[Figure]:
    traces = ctx.data.rows("traces")
    if not traces:
        fig = _page("Radio-TLC", "tlc")
        fig.text(0.06, 0.9, "No TLC traces in this run.", fontsize=10, va="top")
        _note(fig, "No TLC traces in this run.")
        return [fig]
    analyses = ctx.data.rows("analyses")
    out = []
    for n, tr in enumerate(traces, 1):
        fig = _page(f"Radio-TLC {n} of {len(traces)}: {tr.get('trace_id')}", "tlc")
        history = [a for a in analyses if a.get("trace_id") == tr.get("trace_id")]
        current = history[-1] if history else None
        res = (_jsonish(current.get("results")) or {}) if current else {}
        pos = list(_jsonish(tr.get("positions_mm")) or [])
        counts = list(_jsonish(tr.get("counts")) or [])
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
        _note(fig, title)
        y = 0.49
        if current is None:
            info = ["No analysis of this trace (no method was configured for the scan)."]
        else:
            info = [
                f"method {current.get('method')} version {current.get('method_version')}; analysis "
                f"{current.get('analysis_id')} at {ctx.when(current.get('ts_ns'))} by {current.get('actor')}",
                f"RCP {_pct(res.get('rcp_percent'))} (limit >= {res.get('limit_percent')} %): "
                f"{_verdict(res.get('passed'))}",
            ]
            info += [f"warning: {w}" for w in res.get("warnings", [])]
        for text in info:
            fig.text(
                0.06, y, text, fontsize=8.5, va="top", fontweight="bold" if text.startswith("RCP") else None
            )
            y -= 0.018
        _note(fig, *info)
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
            _table(
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
                _pct((_jsonish(a.get("results")) or {}).get("rcp_percent")),
                _verdict((_jsonish(a.get("results")) or {}).get("passed")),
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
            _table(
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
                    _note(fig, part)
                    y -= 0.014
        out.append(fig)
    return out


# -- alarms and audit ------------------------------------------------------------------------------


def alarm_spans(data: RunData) -> list[dict[str, Any]]:
    """Spans where an alarm channel (``*alarm*``) read non-zero."""
    spans: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for r in data.rows("readings"):
        if "alarm" not in r["channel"] or r["quality"] != Quality.GOOD or r["value"] is None:
            continue
        key = f"{r['instrument']}/{r['channel']}"
        if r["value"]:
            span = open_.setdefault(
                key, {"channel": key, "from_ns": r["acq_ns"], "to_ns": r["acq_ns"], "count": 0}
            )
            span["to_ns"] = r["acq_ns"]
            span["count"] += 1
        elif key in open_:
            spans.append(open_.pop(key))
    spans.extend(open_.values())
    return sorted(spans, key=lambda s: s["from_ns"])


def _alarms(ctx: Context) -> list[Figure]:
    flow = Flow("Alarms, gaps and clock steps", "alarms")
    alarms = alarm_spans(ctx.data)
    flow.heading(f"Alarms ({len(alarms)} span(s) of alarm channels reading non-zero)")
    for a in alarms:
        flow.line(
            f"{ctx.when(a['from_ns'])} .. {ctx.when(a['to_ns'])}  {a['channel']}  ({a['count']} readings)"
        )
    if not alarms:
        flow.line("none")
    limits = sorted(fold(ctx.data.rows("alarm_events")), key=lambda a: a["raised_ns"] or 0)
    flow.heading(f"Limit alarms raised during the run ({len(limits)}, from the alarm journal)")
    for a in limits:
        acked = (
            f"acknowledged {ctx.when(a['acked_ns'])} by {a['acked_by']}: {a['comment']}"
            if a["acked_by"]
            else "not acknowledged"
        )
        cleared = f"cleared {ctx.when(a['cleared_ns'])}" if a["cleared_ns"] else "not cleared"
        flow.line(
            f"{ctx.when(a['raised_ns'])}  {a['severity'].upper()} {a['instrument']}/{a['channel']} "
            f"{a['condition']} {a['id']}: {a['message']}"
        )
        flow.line(f"    {acked}; {cleared}; {a['state']}")
    if not limits:
        flow.line("none")
    gaps = ctx.summary["gaps"]
    flow.heading(f"Gaps and non-GOOD readings ({len(gaps)} span(s))")
    for g in gaps:
        flow.line(
            f"{ctx.when(g['from_ns'])} .. {ctx.when(g['to_ns'])}  {g['instrument']}/{g['channel']}  "
            f"{g['quality']} x{g['count']}: {g['reason'] or '-'}"
        )
    if not gaps:
        flow.line("none")
    _, steps = _clock_lines(ctx)
    flow.heading(f"Clock steps ({len(steps)})")
    for s in steps:
        flow.line(s)
    if not steps:
        flow.line("none")
    return flow.pages


def _audit(ctx: Context) -> list[Figure]:
    rows = ctx.data.rows("audit")
    flow = Flow(f"Audit trail of the run ({len(rows)} entries, all shown)", "audit")
    for a in rows:
        detail = _jsonish(a.get("detail"))
        text = json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""
        flow.line(
            f"{ctx.when(a['ts_ns'])}  {a['actor']}  {a['action']}  {a['subject'] or ''}", mono=True, size=6.5
        )
        if text:
            flow.line("    " + text, mono=True, size=6.5)
    if not rows:
        flow.line("No audit entries.")
    return flow.pages


# -- the document ----------------------------------------------------------------------------------


def context(
    data: RunData,
    *,
    settings: ReportSection | None = None,
    timezone: str | None = None,
    by: str = "-",
    now_ns: int | None = None,
) -> Context:
    sigs = [decode(s) for s in data.rows("signatures")]
    current = _current_analyses(data)
    status, reason = _status(data.run, sigs, current)
    summary = figures.summarize(data)
    now = now_ns if now_ns is not None else int(datetime.now(UTC).timestamp() * 1e9)
    return Context(
        data, summary, settings or ReportSection(), site_tz(timezone), by, now, sigs, current, status, reason
    )


def pages_of(ctx: Context) -> Iterator[tuple[str, Figure]]:
    ref = qc_figures.reference_ns(ctx.data, ctx.settings)
    table = qc_figures.activity_table(ctx.data, ref[0])
    yld = qc_figures.radiochemical_yield(ctx.data, ctx.settings, ref[0])
    ctx.summary["_qc"] = {"reference_ns": ref[0], "activity": table, "yield": yld}
    yield from (("header", f) for f in _title(ctx, yld))
    yield "activity", _activity(ctx, table, ref, yld)
    yield from (("process", f) for f in _process(ctx))
    yield from (("tlc", f) for f in _tlc(ctx))
    yield from (("alarms", f) for f in _alarms(ctx))
    yield from (("audit", f) for f in _audit(ctx))


def render(
    data: RunData,
    out: Path,
    *,
    png: bool = False,
    settings: ReportSection | None = None,
    timezone: str | None = None,
    by: str = "-",
    now_ns: int | None = None,
) -> dict[str, Any]:
    """Render the report of ``data`` (decoded, with its signatures) to ``out`` (a PDF), or to
    ``out``'s stem ``-pNN.png`` pages.

    Returns ``{"files", "sections", "figures", "qc", "status"}``; ``figures`` is
    :func:`figures.summarize`, ``qc`` the activity table and yield.
    """
    ctx = context(data, settings=settings, timezone=timezone, by=by, now_ns=now_ns)
    pages: list[tuple[str, Figure]] = []
    try:
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            pages = list(pages_of(ctx))
            qc = ctx.summary.pop("_qc")
            for i, (_, fig) in enumerate(pages, 1):
                _furnish(fig, ctx, i, len(pages))
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            files: list[str] = []
            figures_json = json.dumps(ctx.summary, sort_keys=True, separators=(",", ":"))
            qc_json = json.dumps(qc, sort_keys=True, separators=(",", ":"))
            if png:
                for i, (section, fig) in enumerate(pages, 1):
                    path = out.with_name(f"{out.stem}-p{i:02d}.png")
                    meta = {
                        "Title": f"run {ctx.summary['run_id']}",
                        "Sections": section,
                        "Figures": figures_json,
                        "QC": qc_json,
                        "Text": "\n".join(_TEXT.get(id(fig), [])),
                    }
                    fig.savefig(path, dpi=110, metadata=meta)
                    files.append(str(path))
            else:
                info = {
                    "Title": f"Run report {ctx.summary['run_id']}",
                    "Subject": ctx.summary["seal"] or "",
                    "Keywords": ",".join(SECTIONS),
                    "Creator": f"hotcell-daq {__version__}",
                }
                with PdfPages(out, metadata=info) as pdf:
                    for _, fig in pages:
                        pdf.savefig(fig)
                files.append(str(out))
    finally:
        for _, fig in pages:
            _TEXT.pop(id(fig), None)
            plt.close(fig)
    return {
        "files": files,
        "sections": [s for s, _ in pages],
        "figures": ctx.summary,
        "qc": qc,
        "status": ctx.status,
    }
