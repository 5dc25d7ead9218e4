"""Checking signatures after the fact: :func:`verify_signatures` (``daq verify``) checks each
signature of the journal against its run's recorded seal, the analyses it covers with their
chain hashes, its signer's account at the time (active, with the role and that printed name)
and its ``run_signed`` audit entry, so one removed, copied to another run or edited is named;
:func:`check_exported` checks the signatures of an export against the exported run.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from daq.runs.signatures import ROLE_FOR, audit_detail, decode, signatures_of, table_exists
from daq.runs.store import list_runs
from daq.users import user_at


@dataclasses.dataclass
class SignatureProblem:
    row_id: int
    signature_id: str
    problem: str

    def __str__(self) -> str:
        return f"signatures record {self.row_id} ({self.signature_id}): {self.problem}"


def verify_signatures(conn: sqlite3.Connection) -> list[SignatureProblem]:
    """Check every signature against its run, the analyses it covers, its signer's account
    and its audit entry; an empty list means all hold (the hash chains are checked elsewhere)."""
    if not table_exists(conn, "signatures"):
        return []
    runs = {r["run_id"]: r for r in list_runs(conn)}
    analyses: dict[str, tuple[str | None, str]] = {}
    if table_exists(conn, "analyses"):
        for aid, rid, digest in conn.execute("SELECT analysis_id, run_id, hash FROM analyses"):
            analyses[aid] = (rid, bytes(digest).hex())
    audit: dict[str, dict[str, Any]] = {}
    for subject, detail in conn.execute("SELECT subject, detail FROM audit WHERE action = 'run_signed'"):
        d = json.loads(detail or "{}")
        audit[str(d.get("signature_id"))] = {**d, "run_id": subject}
    problems: list[SignatureProblem] = []
    sigs = signatures_of(conn)
    for sig in sigs:
        problems.extend(
            _check_one(sig, runs.get(sig["run_id"]), analyses, audit.get(sig["signature_id"]), conn)
        )
    seen = {s["signature_id"] for s in sigs}
    for sid, d in audit.items():
        if sid not in seen:
            problems.append(
                SignatureProblem(
                    0,
                    sid,
                    f"the audit trail records it (run {d['run_id']}) "
                    "but the signatures table does not hold it (removed)",
                )
            )
    return problems


def _check_one(
    sig: dict[str, Any],
    run: dict[str, Any] | None,
    analyses: Mapping[str, tuple[str | None, str]],
    audit: dict[str, Any] | None,
    conn: sqlite3.Connection,
) -> list[SignatureProblem]:
    out: list[SignatureProblem] = []

    def bad(text: str) -> None:
        out.append(SignatureProblem(sig["id"], sig["signature_id"], text))

    rid = sig["run_id"]
    if run is None:
        bad(f"signs run {rid}, which is not in the journal")
    elif sig["seal"] != run.get("seal"):
        bad(
            f"signs seal {sig['seal'][:16]}..., which is not the seal of run {rid} "
            f"({(run.get('seal') or 'none')[:16]}...): copied from another run or altered"
        )
    for aid, digest in sorted(sig["analyses"].items()):
        found = analyses.get(aid)
        if found is None or found[0] != rid or found[1] != digest:
            bad(f"covers analysis {aid} of run {rid}, which the journal does not hold with that hash")
    state = user_at(conn, sig["user_id"], sig["ts_ns"])
    if state is None:
        bad(f"signer {sig['user_id']} had no account when signing")
    else:
        if not state["active"]:
            bad(f"signer {sig['user_id']} was disabled when signing")
        if state["full_name"] != sig["printed_name"]:
            bad(f"printed name {sig['printed_name']!r} is not the account's full name {state['full_name']!r}")
        if not any(r in state["roles"] for r in ROLE_FOR.get(sig["meaning"], ())):
            bad(f"signer {sig['user_id']} did not have the role to sign {sig['meaning']!r}")
    if audit is None:
        bad("has no run_signed entry in the audit trail")
    elif audit.get("run_id") != rid or any(audit.get(k) != v for k, v in audit_detail(sig).items()):
        bad("differs from its run_signed audit entry (copied or altered)")
    return out


def check_exported(
    sigs: Iterable[Mapping[str, Any]], *, run_id: str, seal: str, analyses: Iterable[Mapping[str, Any]]
) -> str | None:
    """In an export: each signature must be of the exported run and sign its seal, and cover
    analyses of the export with their exported chain hashes. Returns the first problem."""
    hashes = {str(a["analysis_id"]): bytes(a["hash"]).hex() for a in analyses}
    for raw in sigs:
        sig = decode(raw)
        name = f"signature record {sig['id']} ({sig['signature_id']})"
        if sig["run_id"] != run_id:
            return f"{name} is of run {sig['run_id']}, not of the exported run {run_id}"
        if sig["seal"] != seal:
            return f"{name} signs seal {sig['seal']}, not the exported seal {seal}"
        for aid, digest in sig["analyses"].items():
            if hashes.get(aid) != digest:
                return f"{name} covers analysis {aid}, which the export does not hold with that hash"
    return None
