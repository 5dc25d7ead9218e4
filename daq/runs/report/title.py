"""The title page: the run, its results and its signature block (section ``header``)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from daq.runs.report.frame import (
    Context,
    Flow,
    clock_lines,
    fmt_pct,
    keep_text,
    verdict_text,
)
from daq.runs.signatures import signature_status


def title_pages(ctx: Context, yield_fig: dict[str, Any]) -> list[Figure]:
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
    keep_text(fig, f"{ctx.status}: {ctx.status_reason}")
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
    state, steps = clock_lines(ctx)
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
                f"{fmt_pct(yield_fig.get('corrected_percent'))} decay-corrected, "
                f"{fmt_pct(yield_fig['uncorrected_percent'])} not corrected",
            )
        else:
            flow.kv("radiochemical yield", f"no figure: {yield_fig.get('problem')}")
    else:
        flow.kv("radiochemical yield", "not configured ([report] yield_start and yield_product)")
    current = [r for r in s["rcp"] if r["current"]]
    for r in current:
        flow.kv(
            "RCP",
            f"{r['trace_id']}: {fmt_pct(r['rcp_percent'])} (limit {r['limit_percent']} %) "
            f"{verdict_text(r['passed'])}, {r['method']} v{r['method_version']}",
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
