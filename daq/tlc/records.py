"""What a radio-TLC scan becomes in the journal: its ``traces`` row, its ``analyses`` rows (the
first when the scan ended, one per re-integration, each with its method's definition), the
events journaled beside its readings, and scans rebuilt from their readings when the daemon
stopped before recording them (:func:`unrecorded_scans`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daq.journal.reader import JournalReader
from daq.tlc.methods import TlcMethod
from drivers.rtlc_scanner import Scan

#: Event kinds journaled beside the readings of a scan.
SCAN_STARTED = "scan_started"
SCAN_FINISHED = "scan_finished"
SCAN_ABORTED = "scan_aborted"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def trace_values(scan: Scan, *, run_id: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """The ``traces`` row of ``scan``."""
    return {
        "trace_id": scan.scan_id,
        "instrument": scan.instrument,
        "run_id": run_id,
        "started_ns": scan.started_ns,
        "ended_ns": scan.ended_ns,
        "complete": 1 if scan.complete else 0,
        "params": _json(params),
        "positions_mm": _json(scan.positions_mm),
        "counts": _json(scan.counts),
        "raw": bytes(scan.raw),
    }


def analysis_values(
    *,
    analysis_id: str,
    trace_id: str,
    run_id: str | None,
    ts_ns: int,
    method: TlcMethod,
    results: dict[str, Any],
    actor: str,
    reason: str,
    supersedes: str | None,
) -> dict[str, Any]:
    """The ``analyses`` row (``results`` carries the method definition it used)."""
    return {
        "analysis_id": analysis_id,
        "trace_id": trace_id,
        "run_id": run_id,
        "ts_ns": ts_ns,
        "method": method.name,
        "method_version": method.version,
        "actor": actor,
        "reason": reason,
        "supersedes": supersedes,
        "results": _json({**results, "method_definition": method.definition()}),
    }


def analysis_id_for(trace_id: str, n: int) -> str:
    """The id of the ``n``-th analysis (1-based) of a trace."""
    return f"{trace_id}/a{n}"


def unrecorded_scans(data_dir: Path) -> list[dict[str, Any]]:
    """Scans with a ``scan_started`` event but no trace, rebuilt from their readings."""
    out: list[dict[str, Any]] = []
    with JournalReader(data_dir) as reader:
        conn = reader.conn
        recorded = {row[0] for row in conn.execute("SELECT trace_id FROM traces")}
        started = conn.execute(
            "SELECT instrument, ts_ns, detail FROM events WHERE kind = ? ORDER BY id", (SCAN_STARTED,)
        ).fetchall()
        for instrument, ts_ns, detail_text in started:
            detail = json.loads(detail_text or "{}")
            scan_id = detail.get("scan_id")
            if not scan_id or scan_id in recorded:
                continue
            try:
                batch, operator, range_text, time_text = str(detail.get("start_line", "")).split(",")
                range_mm, time_min = int(range_text), int(time_text)
            except ValueError:
                batch, operator, range_mm, time_min = "?", "?", 100, 5
            scan = Scan(
                scan_id=scan_id,
                instrument=instrument,
                batch=batch,
                operator=operator,
                range_mm=range_mm,
                time_min=time_min,
                start_line=(str(detail.get("start_line", "")) + "\n").encode("ascii", "replace"),
                started_ns=ts_ns,
            )
            # Lines come within the scan's own duration (plus generous slack); stop there.
            horizon = ts_ns + int((3600 + scan.expected_points * (scan.dwell_s + 60)) * 1e9)
            ended = ts_ns
            for channel, value, attrs_text, raw, acq_ns, run_id in conn.execute(
                "SELECT channel, value, attrs, raw, acq_ns, run_id FROM readings "
                "WHERE id > ? AND instrument = ? AND channel IN (?, ?) ORDER BY id",
                (int(detail.get("after_reading_id") or 0), instrument, "counts", "scan_progress"),
            ):
                if acq_ns > horizon:
                    break
                attrs = json.loads(attrs_text) if attrs_text else {}
                if attrs.get("scan_id") != scan_id:
                    continue
                ended = max(ended, acq_ns)
                if scan.run_id is None:
                    scan.run_id = run_id
                if raw:
                    scan.raw += raw
                if channel == "counts" and value is not None:
                    scan.positions_mm.append(float(attrs["position_mm"]))
                    scan.counts.append(int(value))
                elif attrs.get("end"):
                    scan.complete = True
            reason = (
                "the daemon stopped before recording this scan; trace rebuilt from its journaled readings"
            )
            scan.finish(ended, complete=scan.complete, reason=None if scan.complete else reason)
            out.append(
                {"scan": scan, "method": detail.get("method"), "actor": detail.get("actor") or "daemon"}
            )
    return out
