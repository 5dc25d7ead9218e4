"""OQ scenarios of acquisition on the shared run: each kind of instrument read, bad frames
recorded, a disconnect shown as a gap, a server restart survived.
"""

from __future__ import annotations

from typing import Any

from daq.cli.validation.oq.shared import (
    FAULTS,
    OUTAGE_AT_S,
    RESTART_AT_S,
    RESTARTED,
    SERIAL_KINDS,
    Context,
    journal_rows,
    quality_counts,
)
from daq.cli.validation.results import Scenario


def _acq_kind(ctx: Context, sc: Scenario, kinds: tuple[str, ...]) -> Scenario:
    acq = ctx.acquisition()
    names = [n for n, k in acq.kinds.items() if k in kinds]
    sc.check("instruments of this kind in the cell", ">= 1", names, bool(names))
    evidence: dict[str, Any] = {}
    for name in names:
        counts = quality_counts(acq, name)
        evidence[name] = counts
        sc.check(f"{name}: GOOD readings journaled", ">= 1", counts, counts.get("GOOD", 0) >= 1)
        rows = journal_rows(
            acq.data_dir,
            "SELECT count(*) FROM readings WHERE instrument=?"
            " AND (acq_ns < ? OR acq_ns > ? OR quality NOT IN (0,1,2))",
            name,
            acq.start_ns - 10**9,
            acq.end_ns + 10**9,
        )
        sc.check(
            f"{name}: every reading has a UTC time within the run and a quality",
            "0 exceptions",
            rows[0][0],
            rows[0][0] == 0,
        )
    sc.evidence_json(ctx.out, "counts.json", evidence)
    return sc.finish()


def acq_serial(ctx: Context) -> Scenario:
    return _acq_kind(
        ctx, Scenario("OQ-ACQ-SERIAL", "Dose calibrators read over their serial protocols"), SERIAL_KINDS
    )


def acq_modbus(ctx: Context) -> Scenario:
    return _acq_kind(ctx, Scenario("OQ-ACQ-MODBUS", "Synthesizer read over Modbus TCP"), ("modbus",))


def acq_opcua(ctx: Context) -> Scenario:
    return _acq_kind(ctx, Scenario("OQ-ACQ-OPCUA", "Synthesizer read over OPC UA"), ("opcua",))


def acq_tlc(ctx: Context) -> Scenario:
    sc = Scenario("OQ-ACQ-TLC", "Radio-TLC scanner traces acquired")
    acq = ctx.acquisition()
    names = [n for n, k in acq.kinds.items() if k == "rtlc-scanner"]
    sc.check("TLC scanners in the cell", ">= 1", names, bool(names))
    for name in names:
        n = journal_rows(acq.data_dir, "SELECT count(*) FROM traces WHERE instrument=?", name)[0][0]
        sc.check(f"{name}: traces journaled", ">= 1", n, n >= 1)
    return sc.finish()


def bad_frame(ctx: Context) -> Scenario:
    sc = Scenario(
        "OQ-BAD-FRAME", "A bad frame is recorded BAD with raw bytes and a reason; acquisition continues"
    )
    acq = ctx.acquisition()
    name = next(iter(FAULTS))
    sc.observe("fault injected", f"{name}: {FAULTS[name]} (a dropped byte per frame at this rate)")
    bad = journal_rows(
        acq.data_dir,
        "SELECT id, reason, raw FROM readings WHERE instrument=? AND quality=2 AND reason='parse_error'",
        name,
    )
    sc.check("BAD parse_error records", ">= 1", len(bad), len(bad) >= 1)
    sc.check(
        "each carries its raw bytes",
        "raw not empty",
        sum(1 for b in bad if b[2]),
        bool(bad) and all(b[2] for b in bad),
    )
    if bad:
        after = journal_rows(
            acq.data_dir,
            "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND id > ?",
            name,
            bad[0][0],
        )[0][0]
        sc.check("GOOD readings after the first bad frame", ">= 1", after, after >= 1)
    sc.evidence_json(
        ctx.out,
        "bad-frames.json",
        [{"id": b[0], "reason": b[1], "raw": bytes(b[2] or b"").hex()} for b in bad],
    )
    return sc.finish()


def gap_disconnect(ctx: Context) -> Scenario:
    sc = Scenario("OQ-GAP-DISCONNECT", "A disconnection is recorded as a BAD gap with a reason")
    acq = ctx.acquisition()
    sc.observe(
        "fault injected",
        f"{RESTARTED}: server stopped at +{OUTAGE_AT_S} s, started again at +{RESTART_AT_S} s",
    )
    if acq.error:
        sc.check("fault plan", "ran", acq.error, False)
    gaps = journal_rows(
        acq.data_dir,
        "SELECT id, channel, reason, acq_ns, value FROM readings"
        " WHERE instrument=? AND quality=2 AND acq_ns >= ?",
        RESTARTED,
        acq.outage_ns,
    )
    reasons = sorted({g[2] for g in gaps})
    sc.check(
        "BAD records after the server stopped",
        ">= 1 with reason disconnected/connect_failed/timeout",
        reasons,
        any(r in ("disconnected", "connect_failed", "timeout") for r in reasons),
    )
    sc.check(
        "no value in a gap record",
        "value NULL",
        [g[4] for g in gaps if g[4] is not None][:3],
        all(g[4] is None for g in gaps),
    )
    good_in_outage = journal_rows(
        acq.data_dir,
        "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND acq_ns > ? AND acq_ns < ?",
        RESTARTED,
        acq.outage_ns + 5 * 10**8,
        acq.restart_ns,
    )[0][0]
    sc.check("no GOOD reading while the server was down", "0", good_in_outage, good_in_outage == 0)
    sc.evidence_json(
        ctx.out, "gaps.json", [{"id": g[0], "channel": g[1], "reason": g[2], "acq_ns": g[3]} for g in gaps]
    )
    return sc.finish()


def server_restart(ctx: Context) -> Scenario:
    sc = Scenario("OQ-SERVER-RESTART", "Acquisition resumes after the instrument's server restarts")
    acq = ctx.acquisition()
    n = journal_rows(
        acq.data_dir,
        "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND acq_ns > ?",
        RESTARTED,
        acq.restart_ns,
    )[0][0]
    sc.check(f"{RESTARTED}: GOOD readings after the restart", ">= 1", n, n >= 1)
    events = journal_rows(
        acq.data_dir, "SELECT kind, count(*) FROM events WHERE instrument=? GROUP BY kind", RESTARTED
    )
    sc.observe("events of the instrument", dict(events))
    return sc.finish()
