"""The alarms page (alarms, gaps, clock steps) and the audit trail, every entry in full."""

from __future__ import annotations

import json
from typing import Any

from matplotlib.figure import Figure

from daq.alarms.store import fold
from daq.model import Quality
from daq.runs.report.frame import (
    Context,
    Flow,
    clock_lines,
    jsonish,
)
from daq.runs.store import RunData


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


def alarm_pages(ctx: Context) -> list[Figure]:
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
    _, steps = clock_lines(ctx)
    flow.heading(f"Clock steps ({len(steps)})")
    for s in steps:
        flow.line(s)
    if not steps:
        flow.line("none")
    return flow.pages


def audit_pages(ctx: Context) -> list[Figure]:
    rows = ctx.data.rows("audit")
    flow = Flow(f"Audit trail of the run ({len(rows)} entries, all shown)", "audit")
    for a in rows:
        detail = jsonish(a.get("detail"))
        text = json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""
        flow.line(
            f"{ctx.when(a['ts_ns'])}  {a['actor']}  {a['action']}  {a['subject'] or ''}", mono=True, size=6.5
        )
        if text:
            flow.line("    " + text, mono=True, size=6.5)
    if not rows:
        flow.line("No audit entries.")
    return flow.pages
