"""The figures of a run: what the report prints and the export's ``summary.json`` holds.

Computed by one function, :func:`summarize`, from a :class:`~daq.runs.store.RunData`, so
the report and the export cannot disagree, and ``daq verify --export`` can recompute them
from the exported records.

Decay correction: each dose calibrator's first and last GOOD activity are corrected to the end
of synthesis (EOS, the run's end) with the nuclide the reading carries (or the run's); the
decay-corrected yield is last / first at EOS, in per cent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from daq.model import Quality, iso
from daq.physics import NUCLIDE_TABLE_VERSION, UnknownNuclide, decay_between, nuclide
from daq.runs.store import RunData

#: Channels whose changes mark the steps of a synthesis on the process plots.
STEP_CHANNELS = ("step_number", "step")
#: Process units plotted first (temperatures, pressures, flows).
PROCESS_UNITS = ("degC", "°C", "K", "kPa", "Pa", "bar", "mbar", "mL/min", "L/min")
MAX_PROCESS_CHANNELS = 8


def _attrs(row: Mapping[str, Any]) -> dict[str, Any]:
    a = row.get("attrs")
    if isinstance(a, str):
        return dict(json.loads(a)) if a else {}
    return dict(a or {})


def is_dose_calibrator(row: Mapping[str, Any]) -> bool:
    return row["unit"] == "Bq" and "nuclide" in _attrs(row)


def eos_ns(data: RunData) -> int:
    """End of synthesis: the run's end, or its last reading while it is still open."""
    end = data.run.get("ended_ns")
    if end is not None:
        return int(end)
    acq = [r["acq_ns"] for r in data.rows("readings")]
    return max(acq) if acq else int(data.run["started_ns"])


def gaps(readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive non-GOOD readings of one instrument and channel, as spans."""
    spans: list[dict[str, Any]] = []
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    for r in readings:
        key = (r["instrument"], r["channel"])
        if r["quality"] == Quality.GOOD:
            span = open_.pop(key, None)
            if span is not None:
                spans.append(span)
            continue
        span = open_.get(key)
        if span is None:
            open_[key] = {
                "instrument": r["instrument"], "channel": r["channel"], "from_ns": r["acq_ns"],
                "to_ns": r["acq_ns"], "count": 1, "quality": Quality(r["quality"]).name,
                "reason": r["reason"],
            }  # fmt: skip
        else:
            span["to_ns"] = max(span["to_ns"], r["acq_ns"])
            span["count"] += 1
            if Quality(r["quality"]) is Quality.BAD:
                span["quality"] = "BAD"
    spans.extend(open_.values())
    spans.sort(key=lambda s: (s["from_ns"], s["instrument"], s["channel"]))
    return spans


def _dose_calibrators(data: RunData, eos: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_inst: dict[str, list[dict[str, Any]]] = {}
    for r in data.rows("readings"):
        if is_dose_calibrator(r):
            by_inst.setdefault(f"{r['instrument']}/{r['channel']}", []).append(r)
    for key, rows in sorted(by_inst.items()):
        good = [r for r in rows if r["quality"] == Quality.GOOD and r["value"] is not None]
        entry: dict[str, Any] = {"readings": len(rows), "good": len(good), "eos_ns": eos}
        if good:
            first, last = good[0], good[-1]
            symbol = str(_attrs(last).get("nuclide") or data.run.get("nuclide") or "")
            entry.update(
                nuclide=symbol,
                first_bq=first["value"],
                first_ns=first["acq_ns"],
                last_bq=last["value"],
                last_ns=last["acq_ns"],
                max_bq=max(r["value"] for r in good),
            )
            try:
                half_life = nuclide(symbol).half_life_s
                first_eos = decay_between(first["value"], symbol, first["acq_ns"], eos)
                last_eos = decay_between(last["value"], symbol, last["acq_ns"], eos)
            except UnknownNuclide:
                entry.update(half_life_s=None, first_eos_bq=None, last_eos_bq=None, yield_percent=None)
            else:
                entry.update(
                    half_life_s=half_life,
                    nuclide_table=NUCLIDE_TABLE_VERSION,
                    first_eos_bq=first_eos,
                    last_eos_bq=last_eos,
                    yield_percent=(last_eos / first_eos * 100.0) if first_eos > 0 else None,
                )
        out[key] = entry
    return out


def process_channels(data: RunData) -> list[str]:
    """``instrument/channel`` of the process values to plot: process units first, at most eight."""
    seen: dict[str, str] = {}
    for r in data.rows("readings"):
        if r["unit"] in ("", "Bq") or is_dose_calibrator(r) or r["channel"] in STEP_CHANNELS:
            continue
        seen.setdefault(f"{r['instrument']}/{r['channel']}", r["unit"])
    ranked = sorted(seen, key=lambda k: (seen[k] not in PROCESS_UNITS, k))
    return ranked[:MAX_PROCESS_CHANNELS]


def steps(data: RunData) -> list[dict[str, Any]]:
    """Where a step channel changed value: the marks on the process plots."""
    marks: list[dict[str, Any]] = []
    last: dict[str, float | None] = {}
    for r in data.rows("readings"):
        if r["channel"] not in STEP_CHANNELS or r["quality"] != Quality.GOOD:
            continue
        key = f"{r['instrument']}/{r['channel']}"
        if last.get(key, math.nan) != r["value"]:
            last[key] = r["value"]
            attrs = _attrs(r)
            name = attrs.get("text") or attrs.get("step_name") or attrs.get("label")  # the enum's name
            marks.append({"ts_ns": r["acq_ns"], "step": r["value"], "name": name, "channel": key})
    return marks


def rcp_table(data: RunData) -> list[dict[str, Any]]:
    """The run's TLC analyses (newest integration of each trace marked current)."""
    rows = data.rows("analyses")
    superseded = {a.get("supersedes") for a in rows if a.get("supersedes")}
    out = []
    for a in rows:
        res = a.get("results")
        res = json.loads(res) if isinstance(res, str) and res else (res or {})
        out.append(
            {
                "analysis_id": a.get("analysis_id"), "trace_id": a.get("trace_id"),
                "method": a.get("method"), "method_version": a.get("method_version"),
                "ts_ns": a.get("ts_ns"), "actor": a.get("actor"), "reason": a.get("reason"),
                "supersedes": a.get("supersedes"),
                "current": a.get("analysis_id") not in superseded,
                "rcp_percent": res.get("rcp_percent"), "limit_percent": res.get("limit_percent"),
                "passed": res.get("passed"), "complete": res.get("complete"),
            }
        )  # fmt: skip
    return out


def summarize(data: RunData) -> dict[str, Any]:
    """Every figure of the run report, JSON-able."""
    run = data.run
    readings = data.rows("readings")
    eos = eos_ns(data)
    quality = {q.name: 0 for q in Quality}
    channels: dict[str, int] = {}
    for r in readings:
        quality[Quality(r["quality"]).name] += 1
        key = f"{r['instrument']}/{r['channel']}"
        channels[key] = channels.get(key, 0) + 1
    return {
        "run_id": run["run_id"],
        "batch": run.get("batch"),
        "product": run.get("product"),
        "nuclide": run.get("nuclide"),
        "operator": run.get("operator"),
        "method": run.get("method"),
        "config_sha256": run.get("config_sha256"),
        "started": iso(run["started_ns"]),
        "ended": iso(run["ended_ns"]) if run.get("ended_ns") is not None else None,
        "seal": run.get("seal"),
        "eos": iso(eos),
        "eos_ns": eos,
        "readings": len(readings),
        "quality": quality,
        "channels": channels,
        "dose_calibrators": _dose_calibrators(data, eos),
        "gaps": gaps(readings),
        "steps": steps(data),
        "rcp": rcp_table(data),
        "traces": len(data.rows("traces")),
        "annotations": len(run.get("annotations", [])),
        "t0": run.get("t0", []),
        "audit_entries": len(data.rows("audit")),
        "clock_steps": sum(1 for a in data.rows("audit") if a["action"] == "clock_step"),
    }
