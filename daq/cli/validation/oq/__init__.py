"""Operational qualification: acceptance scenarios against the simulators, in a scratch
data directory, through the real daemon and the real protocols.

One acquisition run (:mod:`daq.cli.validation.oq.shared`) serves most scenarios: every instrument of the demo
cell is read from its simulator for a few seconds while faults are injected (frames with a
dropped byte, one instrument's server stopped and started again). The scenarios then check
the journal for what each requirement expects. Scenarios that need their own process (a
``daq run`` killed with SIGKILL) start it. The scenarios are grouped by what they exercise:
acquisition (:mod:`~daq.cli.validation.oq.acquisition`), the records
(:mod:`~daq.cli.validation.oq.records`) and processes of their own
(:mod:`~daq.cli.validation.oq.processes`); :data:`SCENARIOS` lists them in the order they run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daq.cli.validation.oq.acquisition import (
    acq_modbus,
    acq_opcua,
    acq_serial,
    acq_tlc,
    bad_frame,
    gap_disconnect,
    server_restart,
)
from daq.cli.validation.oq.processes import disk_full, forward_outage, kill_restart
from daq.cli.validation.oq.records import alarms, clock_audit, export, run_seal, signatures, tamper, verify
from daq.cli.validation.oq.shared import Context
from daq.cli.validation.results import Scenario

SCENARIOS: dict[str, Callable[[Context], Scenario]] = {
    "OQ-ACQ-SERIAL": acq_serial,
    "OQ-ACQ-MODBUS": acq_modbus,
    "OQ-ACQ-OPCUA": acq_opcua,
    "OQ-ACQ-TLC": acq_tlc,
    "OQ-BAD-FRAME": bad_frame,
    "OQ-GAP-DISCONNECT": gap_disconnect,
    "OQ-SERVER-RESTART": server_restart,
    "OQ-VERIFY": verify,
    "OQ-TAMPER": tamper,
    "OQ-CLOCK-AUDIT": clock_audit,
    "OQ-KILL-RESTART": kill_restart,
    "OQ-DISK-FULL": disk_full,
    "OQ-RUN-SEAL": run_seal,
    "OQ-EXPORT": export,
    "OQ-ALARMS": alarms,
    "OQ-SIGNATURES": signatures,
    "OQ-FORWARD-OUTAGE": forward_outage,
}


def run_oq(out: Path, scratch: Path, only: list[str] | None = None) -> list[Scenario]:
    ctx = Context(out, scratch)
    results = []
    for sid, fn in SCENARIOS.items():
        if only and sid not in only:
            continue
        sc = Scenario(sid, sid)
        try:
            results.append(fn(ctx))
        except Exception as exc:  # a scenario that crashes is a failed scenario, never a crash of the pack
            sc.check("scenario ran", "no error", f"{type(exc).__name__}: {exc}", False)
            results.append(sc.finish())
    return results
