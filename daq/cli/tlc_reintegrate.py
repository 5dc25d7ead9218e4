"""``daq tlc reintegrate``: integrate a trace's raw counts again and *append* the analysis.

The method is ``--method`` (from ``--config``, or as stored in the journal with an earlier
analysis) or the current analysis's, with ``--roi``/``--origin-mm``/``--front-mm``/``--limit``
applied on top (changed ROIs or positions mark its version ``+adhoc``). The new analysis
names the one it ``supersedes``, which stays as it was; an audit entry carries who, why and
the trace's run. It writes to the journal, so it holds the data directory's lock (refused
while a daemon runs there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daq.clock import SystemClock
from daq.configfile.load import load_config
from daq.errors import ConfigError, DaqError
from daq.journal.journal import Journal
from daq.journal.lock import take_lock
from daq.journal.reader import JournalReader
from daq.tlc import store
from daq.tlc.analysis import analyse
from daq.tlc.methods import TlcMethod
from daq.tlc.records import analysis_id_for, analysis_values

ROI_KINDS = ("product", "free", "colloid", "impurity")


def _parse_roi(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) != 4:
        raise ConfigError(f"--roi {text!r}: expected LABEL:KIND:RF_FROM:RF_TO")
    label, kind, lo, hi = parts
    if kind not in ROI_KINDS:
        raise ConfigError(f"--roi {text!r}: kind must be one of {', '.join(ROI_KINDS)}")
    try:
        return {"label": label, "kind": kind, "rf_from": float(lo), "rf_to": float(hi)}
    except ValueError:
        raise ConfigError(f"--roi {text!r}: RF_FROM and RF_TO must be numbers") from None


def _stored_method(reader: JournalReader, name: str) -> dict[str, Any] | None:
    for row in reversed(reader.table("analyses", where="method = ?", args=(name,))):
        if "+adhoc" in (row["method_version"] or ""):
            continue  # ROIs changed by hand: not the method as configured
        definition = json.loads(row["results"]).get("method_definition")
        if definition:
            return dict(definition)
    return None


def build_method(
    args: argparse.Namespace, reader: JournalReader, current: dict[str, Any] | None
) -> TlcMethod:
    """The method of a re-integration: ``--method`` (from ``--config`` or as stored in the
    journal) or the current analysis's, with ``--roi``/``--origin-mm``/``--front-mm``/``--limit``
    applied on top. Changed ROIs or positions mark the version ``+adhoc``."""
    base: dict[str, Any] | None = None
    if args.method is not None:
        if args.config is not None:
            cfg = load_config(args.config)
            try:
                base = cfg.model.tlc.get(args.method).definition()
            except KeyError as exc:
                raise ConfigError(str(exc.args[0]), file=str(args.config)) from None
        else:
            base = _stored_method(reader, args.method)
            if base is None:
                raise ConfigError(
                    f"method {args.method!r} is stored with no analysis in this journal; give --config FILE"
                )
    elif current is not None:
        base = dict(current["results"].get("method_definition") or {})
    overrides: dict[str, Any] = {}
    if args.roi:
        overrides["rois"] = [_parse_roi(r) for r in args.roi]
    for key, value in (
        ("origin_mm", args.origin_mm),
        ("front_mm", args.front_mm),
        ("limit_percent", args.limit),
    ):
        if value is not None:
            overrides[key] = value
    if not base:
        if not args.roi:
            raise ConfigError("this trace has no analysis yet: give --method NAME or --roi ...")
        missing = [k for k in ("origin_mm", "front_mm", "limit_percent") if k not in overrides]
        if missing:
            raise ConfigError(
                "with --roi and no method, also give "
                + ", ".join("--" + m.replace("_", "-") for m in missing)
            )
        base = {"name": "adhoc", "version": "0", "background": {"mode": "outside_rois"}}
    definition = {**base, **overrides}
    if overrides:
        definition["version"] = f"{base['version']}+adhoc"
    try:
        return TlcMethod.model_validate(definition)
    except ValueError as exc:
        raise ConfigError(f"re-integration method: {exc}") from None


async def reintegrate(args: argparse.Namespace) -> dict[str, Any]:
    """Append the new analysis and its audit entry; returns the analysis row written."""
    if not args.actor.strip() or not args.reason.strip():
        raise DaqError("--actor and --reason must not be empty")
    data_dir: Path = args.data_dir
    with JournalReader(data_dir) as reader:
        trace = store.find_trace(reader, args.scan)
        history = store.analyses(reader, trace["trace_id"])
        current = history[-1] if history else None
        method = build_method(args, reader, current)
    range_mm = trace["params"].get("range_mm")
    results = analyse(
        trace["positions_mm"],
        trace["counts"],
        method,
        complete=trace["complete"],
        range_mm=range_mm if isinstance(range_mm, int | float) else None,
    )
    clock = SystemClock()
    analysis_id = analysis_id_for(trace["trace_id"], len(history) + 1)
    supersedes = current["analysis_id"] if current else None
    values = analysis_values(
        analysis_id=analysis_id,
        trace_id=trace["trace_id"],
        run_id=trace["run_id"],
        ts_ns=clock.time_ns(),
        method=method,
        results=results,
        actor=args.actor,
        reason=args.reason,
        supersedes=supersedes,
    )
    try:
        lock = take_lock(data_dir)
    except DaqError as exc:
        raise DaqError(f"{exc}; stop it before re-integrating") from None
    try:
        journal = await Journal.open(data_dir, clock=clock)
        try:
            journal.record("analyses", values)
            journal.audit(
                "tlc_reintegrate",
                actor=args.actor,
                subject=trace["trace_id"],
                run_id=trace["run_id"],
                detail={
                    "reason": args.reason,
                    "analysis_id": analysis_id,
                    "supersedes": supersedes,
                    "method": method.name,
                    "method_version": method.version,
                    "rois": [r.model_dump() for r in method.rois],
                    "rcp_percent": results["rcp_percent"],
                    "passed": results["passed"],
                },
            )
            await journal.flush()
        finally:
            await journal.close()
    finally:
        lock.close()
    return {**values, "results": results}
