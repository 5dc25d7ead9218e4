"""``daq tlc``: radio-TLC traces and their analyses, read from the journal.

- ``daq tlc list --data-dir DIR``: every trace with its current RCP and verdict.
- ``daq tlc show SCAN --data-dir DIR [--png FILE]``: the RCP table per ROI, the analysis
  history, and (``--png``) the chromatogram with the ROIs shaded.
- ``daq tlc reintegrate SCAN --data-dir DIR (--method NAME | --roi ...) --actor WHO --reason WHY``:
  integrate the same raw trace again and *append* the analysis (``supersedes`` names the one
  it replaces, which stays as it was), with an audit entry carrying who, why and the trace's run.
  It writes to the journal, so it runs with the daemon stopped (it refuses while a daemon
  holds ``daemon.lock`` in the data directory).

``SCAN`` is a trace id, a unique prefix of one, or ``last``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from daq.cli.argtypes import add_data_dir, finite
from daq.cli.tlc_reintegrate import ROI_KINDS, reintegrate
from daq.journal.reader import JournalReader
from daq.model import iso
from daq.timefmt import human
from daq.tlc import store
from daq.tlc.colours import KIND_COLOURS, OTHER_COLOUR

NAME = "tlc"
HELP = "radio-TLC traces: list them, show the RCP table (and a PNG), re-integrate with other ROIs"

#: The lock a running daemon holds in its data directory.


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tlc_command", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("list", help="every trace with its current RCP and verdict")
    add_data_dir(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    show = sub.add_parser("show", help="the RCP table per ROI, the analysis history, optionally a PNG")
    show.add_argument("scan", metavar="SCAN", help="trace id, a unique prefix of it, or 'last'")
    add_data_dir(show)
    show.add_argument("--png", type=Path, default=None, metavar="FILE", help="plot the chromatogram here")
    show.add_argument("--json", action="store_true", help="the trace and its analyses as JSON")

    re = sub.add_parser(
        "reintegrate",
        help="append a new analysis of a trace with another method or changed ROIs (audited)",
    )
    re.add_argument("scan", metavar="SCAN", help="trace id, a unique prefix of it, or 'last'")
    add_data_dir(re)
    re.add_argument("--method", default=None, metavar="NAME", help="integrate with this method")
    re.add_argument(
        "--config",
        type=Path,
        default=None,
        help="take --method from this config file (default: the method as last stored in the journal)",
    )
    re.add_argument(
        "--roi",
        action="append",
        default=None,
        metavar="LABEL:KIND:RF_FROM:RF_TO",
        help=f"replace the ROIs (repeatable; KIND one of {', '.join(ROI_KINDS)})",
    )
    re.add_argument("--origin-mm", type=finite, default=None, help="override the origin position")
    re.add_argument("--front-mm", type=finite, default=None, help="override the solvent-front position")
    re.add_argument(
        "--limit", type=finite, default=None, metavar="PERCENT", help="override the release limit"
    )
    re.add_argument("--actor", required=True, help="who re-integrates (recorded in the audit trail)")
    re.add_argument("--reason", required=True, help="why (recorded in the audit trail)")


# -- list -----------------------------------------------------------------------------------


def _verdict(results: dict[str, Any] | None) -> str:
    if results is None:
        return "-"
    if results.get("passed") is True:
        return "PASS"
    if results.get("passed") is False:
        return "FAIL"
    return "no verdict"


def _rcp(results: dict[str, Any] | None) -> str:
    if results is None or results.get("rcp_percent") is None:
        return "-"
    return f"{results['rcp_percent']:.2f} %"


def collect_list(data_dir: Path) -> list[dict[str, Any]]:
    with JournalReader(data_dir) as reader:
        traces = store.traces(reader)
        current = store.latest_analyses(reader)
        counts: dict[str, int] = {}
        for row in reader.table("analyses"):
            counts[row["trace_id"]] = counts.get(row["trace_id"], 0) + 1
    out = []
    for t in traces:
        a = current.get(t["trace_id"])
        out.append(
            {
                "trace_id": t["trace_id"],
                "instrument": t["instrument"],
                "run_id": t["run_id"],
                "started": iso(t["started_ns"]),
                "started_ns": t["started_ns"],
                "points": len(t["counts"]),
                "complete": t["complete"],
                "batch": t["params"].get("batch"),
                "analyses": counts.get(t["trace_id"], 0),
                "analysis_id": a["analysis_id"] if a else None,
                "method": a["method"] if a else None,
                "method_version": a["method_version"] if a else None,
                "rcp_percent": a["results"].get("rcp_percent") if a else None,
                "passed": a["results"].get("passed") if a else None,
            }
        )
    return out


def _list(args: argparse.Namespace) -> int:
    rows = collect_list(args.data_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no TLC traces in the journal")
        return 0
    print(
        f"{'trace':<34} {'batch':<12} {'started':<29} {'pts':>4} {'complete':<8} "
        f"{'method':<20} {'RCP':>9}  verdict"
    )
    for r in rows:
        method = f"{r['method']} v{r['method_version']}" if r["method"] else "-"
        results = None if r["analysis_id"] is None else r
        print(
            f"{r['trace_id']:<34} {r['batch'] or '-'!s:<12} {human(r['started_ns']):<29} {r['points']:>4} "
            f"{'yes' if r['complete'] else 'NO':<8} {method:<20} {_rcp(results):>9}  {_verdict(results)}"
            + (f" ({r['analyses']} analyses)" if r["analyses"] > 1 else "")
        )
    return 0


# -- show -----------------------------------------------------------------------------------


def _print_analysis(a: dict[str, Any], *, current: bool) -> None:
    res = a["results"]
    tag = "current" if current else "superseded"
    print(f"analysis {a['analysis_id']} ({tag}) at {human(a['ts_ns'])} by {a['actor']}: {a['reason']}")
    if a["supersedes"]:
        print(f"  supersedes {a['supersedes']}")
    print(
        f"  method {a['method']} version {a['method_version']}"
        + (f" ({res['product']})" if res.get("product") else "")
        + f"; origin {res['origin_mm']:g} mm, front {res['front_mm']:g} mm"
    )
    bg = res["background"]
    print(
        f"  background: {bg['mode']}, {bg['counts_per_point']:g} counts per position "
        f"({bg['points']} positions)"
    )
    print(
        f"  {'ROI':<14} {'kind':<9} {'Rf':^13} {'mm':^13} {'gross':>9} {'background':>11} "
        f"{'net':>10} {'%':>8}"
    )
    for r in res["rois"]:
        pct = "-" if r.get("percent") is None else f"{r['percent']:.2f}"
        print(
            f"  {r['label']:<14} {r['kind']:<9} {r['rf_from']:>6.2f}-{r['rf_to']:<6.2f} "
            f"{r.get('mm_from', 0):>6.1f}-{r.get('mm_to', 0):<6.1f} {r['gross_counts']:>9} "
            f"{r['background_counts']:>11.1f} {r['net_counts']:>10.1f} {pct:>8}"
        )
    print(f"  RCP {_rcp(res)} (limit >= {res['limit_percent']:g} %): {_verdict(res)}")
    for w in res.get("warnings", []):
        print(f"  warning: {w}")


def _show(args: argparse.Namespace) -> int:
    with JournalReader(args.data_dir) as reader:
        trace = store.find_trace(reader, args.scan)
        analyses = store.analyses(reader, trace["trace_id"])
        audits = store.reintegrations(reader, trace["trace_id"])
    if args.json:
        out = {**trace, "raw": trace["raw"].decode("ascii", "replace") if trace["raw"] else None}
        print(json.dumps({"trace": out, "analyses": analyses, "reintegrations": audits}, indent=2))
    else:
        p = trace["params"]
        print(
            f"trace {trace['trace_id']} on {trace['instrument']}"
            + (f", run {trace['run_id']}" if trace["run_id"] else "")
        )
        print(
            f"  started {human(trace['started_ns'])}, "
            f"ended {human(trace['ended_ns']) if trace['ended_ns'] else '-'}"
        )
        status = "complete (end received)" if trace["complete"] else f"INCOMPLETE: {p.get('abort_reason')}"
        print(f"  {status}")
        print(
            f"  batch {p.get('batch')}, operator {p.get('operator')}, range {p.get('range_mm')} mm, "
            f"{p.get('time_min')} min, {len(trace['counts'])} of {p.get('expected_points')} positions"
        )
        if not analyses:
            print("no analysis (no method was configured for this scan); see 'daq tlc reintegrate'")
        for i, a in enumerate(analyses):
            _print_analysis(a, current=i == len(analyses) - 1)
        if analyses:
            proposals = analyses[-1]["results"].get("proposed_rois") or []
            if proposals:
                print("proposed ROIs (advisory, from peak finding; the method's ROIs decide):")
                for pr in proposals:
                    print(
                        f"  Rf {pr['rf_from']:.2f}-{pr['rf_to']:.2f}, apex at {pr['apex_mm']:g} mm "
                        f"(Rf {pr['apex_rf']:.2f}), about {pr['net_counts']:g} net counts, "
                        f"looks like {pr['kind_hint']}"
                    )
        for au in audits:
            d = au["detail"] or {}
            print(
                f"re-integrated {human(au['ts_ns'])} by {au['actor']}: {d.get('reason')} "
                f"-> {d.get('analysis_id')} (supersedes {d.get('supersedes')})"
            )
    if args.png is not None:
        plot_png(trace, analyses[-1] if analyses else None, args.png)
        print(f"chromatogram written to {args.png}", file=sys.stderr if args.json else sys.stdout)
    return 0


def plot_png(trace: dict[str, Any], analysis: dict[str, Any] | None, path: Path) -> None:
    """The chromatogram (counts per position) with the ROIs of ``analysis`` shaded."""
    from matplotlib.figure import Figure  # the Agg canvas; no display needed

    fig = Figure(figsize=(9, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.step(trace["positions_mm"], trace["counts"], where="mid", color="black", linewidth=0.9, label="counts")
    title = f"{trace['trace_id']}"
    if analysis is not None:
        res = analysis["results"]
        for r in res["rois"]:
            colour = KIND_COLOURS.get(r["kind"], OTHER_COLOUR)
            ax.axvspan(r["mm_from"], r["mm_to"], color=colour, alpha=0.2, label=f"{r['label']} ({r['kind']})")
        bg = res["background"]["counts_per_point"]
        if bg:
            ax.axhline(bg, color="tab:blue", linestyle=":", linewidth=1, label="background")
        for x, name in ((res["origin_mm"], "origin"), (res["front_mm"], "front")):
            ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(
                name,
                (x, 0.98),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=8,
            )
        title += (
            f"  |  {analysis['method']} v{analysis['method_version']}  |  RCP {_rcp(res)}  {_verdict(res)}"
        )
        origin, front = res["origin_mm"], res["front_mm"]
        span = front - origin
        sec = ax.secondary_xaxis(
            "top", functions=(lambda x: (x - origin) / span, lambda rf: origin + rf * span)
        )
        sec.set_xlabel("Rf")
    if not trace["complete"]:
        title += "  |  INCOMPLETE"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("position (mm)")
    ax.set_ylabel("counts per position")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(str(path))


def _reintegrate(args: argparse.Namespace) -> int:
    row = asyncio.run(reintegrate(args))
    res = row["results"]
    print(
        f"appended analysis {row['analysis_id']} (supersedes {row['supersedes'] or 'nothing'}): "
        f"method {row['method']} v{row['method_version']}, RCP {_rcp(res)}, {_verdict(res)}"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    if args.tlc_command == "list":
        return _list(args)
    if args.tlc_command == "show":
        return _show(args)
    return _reintegrate(args)


def summary_lines(data_dir: Path) -> list[str]:
    """Lines for the ``daq demo`` summary: each trace with its current RCP and verdict."""
    rows = collect_list(data_dir)
    if not rows:
        return []
    lines = [f"  radio-TLC traces: {len(rows)} ('daq tlc show SCAN --data-dir {data_dir}' for the ROI table)"]
    for r in rows:
        results = None if r["analysis_id"] is None else r
        state = "complete" if r["complete"] else "INCOMPLETE"
        lines.append(f"    {r['trace_id']:<32} {state:<10} RCP {_rcp(results):>9}  {_verdict(results)}")
    return lines
