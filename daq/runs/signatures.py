"""Electronic signatures of runs: review, approval, rejection.

A signature is a hash-chained row of the journal's ``signatures`` table: the signer's user id
and printed (full) name, the meaning (``reviewed``, ``approved``, ``rejected``), the time with
the clock's sync state, an optional comment, and the hashes it signs: the run's seal and the
chain hash of each analysis version it covers (the current analysis of each of the run's
TLC traces). Each signature also has an ``run_signed`` audit entry repeating what it signs.

Rules (:func:`sign`), each refusal audited (``signature_refused``) before it is raised:

- the signer signs in with user id and password (:func:`daq.users.authenticate`);
- ``reviewed`` needs the reviewer role, ``approved`` the approver role, ``rejected`` either;
- only a sealed run whose records still match their chain hashes and its seal can be signed;
- ``approved`` needs a ``reviewed`` signature covering the same analysis versions;
- separation of duties (``[signatures]``): by default the approver neither operated the run
  nor reviewed it.

:func:`sign_live` does the same inside a running daemon (``POST /api/runs/{run_id}/signatures``
of the local API: token plus the signer's credentials, loopback only).

A re-integration after a signature appends a new analysis version: the signature keeps
covering the version it signed, and :func:`signature_status` says it no longer covers the
current one (reports and reviews show it).

Signatures are checked after the fact by :mod:`daq.runs.signature_checks` (``daq verify``,
exports).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from daq.clock import Clock
from daq.errors import DaqError
from daq.journal.journal import Journal, connect, dumps
from daq.journal.schema import CHAINED
from daq.runs.checked import journal_run
from daq.runs.clock import read_sync_state
from daq.runs.qc_settings import SigningSection, UsersSection
from daq.runs.settings import ClockSection
from daq.runs.store import get_run
from daq.users import Account, Writes, authenticate

Meaning = Literal["reviewed", "approved", "rejected"]
MEANINGS: tuple[str, ...] = ("reviewed", "approved", "rejected")

#: The roles that may sign with each meaning.
ROLE_FOR: dict[str, tuple[str, ...]] = {
    "reviewed": ("reviewer",),
    "approved": ("approver",),
    "rejected": ("reviewer", "approver"),
}


class SignatureRefused(DaqError):
    """A signature was refused (the refusal is in the audit trail)."""


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    q = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
    return conn.execute(q, (table,)).fetchone() is not None


def current_analyses(conn: sqlite3.Connection, run_id: str) -> dict[str, str]:
    """The current (latest) analysis of each of ``run_id``'s traces: ``{analysis_id: chain hash hex}``."""
    if "analyses" not in CHAINED or not table_exists(conn, "analyses"):
        return {}
    latest: dict[str, tuple[str, str]] = {}
    for trace_id, analysis_id, digest in conn.execute(
        "SELECT trace_id, analysis_id, hash FROM analyses WHERE run_id = ? ORDER BY id", (run_id,)
    ):
        latest[trace_id] = (analysis_id, bytes(digest).hex())
    return dict(sorted(latest.values()))


def decode(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``signatures`` row with its JSON columns decoded."""
    out = dict(row)
    for col in ("clock", "analyses", "detail"):
        if isinstance(out.get(col), str):
            out[col] = json.loads(out[col])
    out["analyses"] = out.get("analyses") or {}
    return out


def signatures_of(conn: sqlite3.Connection, run_id: str | None = None) -> list[dict[str, Any]]:
    """The signatures (decoded, with ``hash``), of ``run_id`` or of every run, in id order."""
    if not table_exists(conn, "signatures"):
        return []
    cols = CHAINED["signatures"]
    sql = f"SELECT {', '.join(cols)}, hash FROM signatures"
    args: tuple[Any, ...] = ()
    if run_id is not None:
        sql += " WHERE run_id = ?"
        args = (run_id,)
    out = []
    for r in conn.execute(sql + " ORDER BY id", args):
        row = decode(dict(zip(cols, r[:-1], strict=True)))
        row["hash"] = bytes(r[-1])
        out.append(row)
    return out


def signature_status(sig: Mapping[str, Any], current: Mapping[str, str]) -> dict[str, Any]:
    """Whether ``sig`` covers the run's current analysis versions; if not, which of its versions
    were superseded and which current ones it does not cover."""
    signed = dict(sig.get("analyses") or {})
    superseded = sorted(a for a in signed if a not in current)
    uncovered = sorted(a for a in current if a not in signed)
    return {
        "covers_current": not superseded and not uncovered,
        "superseded": superseded,
        "uncovered": uncovered,
    }


def _operated(acct: Account, run: Mapping[str, Any]) -> bool:
    names = {str(run.get("operator") or "").strip().lower(), str(run.get("started_by") or "").strip().lower()}
    names.discard("")
    return acct.user_id.lower() in names or acct.full_name.strip().lower() in names


def sign(
    journal: Writes,
    conn: sqlite3.Connection,
    *,
    run_id: str,
    meaning: str,
    comment: str | None,
    user_id: str,
    password: str,
    users: UsersSection,
    policy: SigningSection,
    clock_state: dict[str, Any],
) -> dict[str, Any]:
    """Sign ``run_id`` (see the module docstring for the rules); returns the signature as recorded.

    ``conn`` is a read-only connection to the same journal; ``journal`` is opened for writing
    (under the daemon lock) and receives the signature and every audit entry, refusals included.
    """

    def refuse(reason: str, actor: str) -> SignatureRefused:
        journal.audit(
            "signature_refused",
            actor=actor,
            subject=run_id,
            run_id=run_id,
            detail={"reason": reason, "meaning": meaning, "user_id": user_id},
        )
        return SignatureRefused(f"signature refused: {reason}")

    if meaning not in MEANINGS:
        raise refuse(f"meaning must be one of {', '.join(MEANINGS)}", user_id or "-")
    acct = authenticate(journal, conn, user_id, password, users, purpose=f"sign {meaning}", run_id=run_id)
    allowed = ROLE_FOR[meaning]
    if not any(r in acct.roles for r in allowed):
        raise refuse(
            f"{acct.user_id} has role(s) {', '.join(acct.roles)}; "
            f"signing {meaning!r} needs {' or '.join(allowed)}",
            acct.user_id,
        )
    try:
        run = get_run(conn, run_id)
    except DaqError as exc:
        raise refuse(str(exc), acct.user_id) from None
    if not run.get("seal"):
        raise refuse(f"run {run_id} is not sealed (still open); only sealed runs can be signed", acct.user_id)
    try:
        _, seal, through = journal_run(conn, run_id)
    except DaqError as exc:
        raise refuse(f"run {run_id} fails verification: {exc}", acct.user_id) from None
    covered = current_analyses(conn, run_id)
    earlier = signatures_of(conn, run_id)
    current_sigs = [s for s in earlier if signature_status(s, covered)["covers_current"]]
    operated = _operated(acct, run)
    if meaning == "approved":
        if not any(s["meaning"] == "reviewed" for s in current_sigs):
            raise refuse(
                f"run {run_id} has no 'reviewed' signature for its current analysis versions; "
                "it must be reviewed before it is approved",
                acct.user_id,
            )
        if policy.approver_not_operator and operated:
            raise refuse(
                f"separation of duties: {acct.user_id} operated run {run_id} and may not approve it",
                acct.user_id,
            )
        if policy.approver_not_reviewer and any(
            s["meaning"] == "reviewed" and s["user_id"] == acct.user_id for s in current_sigs
        ):
            raise refuse(
                f"separation of duties: {acct.user_id} reviewed run {run_id} and may not approve it",
                acct.user_id,
            )
    if meaning == "reviewed" and policy.reviewer_not_operator and operated:
        raise refuse(
            f"separation of duties: {acct.user_id} operated run {run_id} and may not review it", acct.user_id
        )
    if any(s["meaning"] == meaning and s["user_id"] == acct.user_id for s in current_sigs):
        raise refuse(
            f"{acct.user_id} has already signed run {run_id} as {meaning} for these versions", acct.user_id
        )
    now = journal.clock.time_ns()
    values = {
        "signature_id": f"sig-{uuid.uuid4().hex[:16]}",
        "run_id": run_id,
        "ts_ns": now,
        "mono_ns": journal.clock.monotonic_ns(),
        "user_id": acct.user_id,
        "printed_name": acct.full_name,
        "meaning": meaning,
        "comment": comment or None,
        "clock": dumps(clock_state) or "{}",
        "seal": seal,
        "analyses": json.dumps(covered, sort_keys=True),
        "detail": dumps({"roles": list(acct.roles), "seal_through": through, "policy": policy.model_dump()}),
    }
    journal.record("signatures", values)
    journal.audit(
        "run_signed", actor=acct.user_id, subject=run_id, run_id=run_id, detail=audit_detail(values)
    )
    return decode(values)


class DeferredWrites:
    """Stands in for the journal while :func:`sign` runs on a worker thread (password hashing
    and re-hashing the run's records must not stall the event loop); :meth:`replay` then
    queues the writes, in order, on the journal from the loop's thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def audit(
        self,
        action: str,
        *,
        actor: str = "daemon",
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.calls.append(
            ("audit", (action,), {"actor": actor, "subject": subject, "detail": detail, "run_id": run_id})
        )

    def record(self, table: str, values: Mapping[str, Any]) -> int:
        self.calls.append(("record", (table, dict(values)), {}))
        return 0

    def replay(self, journal: Journal) -> None:
        for name, args, kwargs in self.calls:
            getattr(journal, name)(*args, **kwargs)
        self.calls.clear()


class SigningConfig(Protocol):
    """What signing reads of a config (:class:`daq.configfile.model.DaqConfig` has it): the
    accounts' rules, the signing policy and where the clock's sync state comes from."""

    @property
    def users(self) -> UsersSection: ...

    @property
    def signatures(self) -> SigningSection: ...

    @property
    def clock(self) -> ClockSection: ...


#: The config in force for a run, given a read-only journal connection and the run's config
#: hash (:func:`daq.configfile.snapshot.site_config`, given by the composition root).
RunConfig = Callable[[sqlite3.Connection, str | None], SigningConfig]


async def sign_live(
    journal: Journal,
    *,
    run_id: str,
    meaning: str,
    comment: str | None,
    user_id: str,
    password: str,
    run_config: RunConfig,
) -> dict[str, Any]:
    """:func:`sign` in a running daemon (the local API): the checks run on a worker thread over
    a read-only connection; the signature and every audit entry, refusals included, are
    journaled through the daemon's own writer. Policy from the run's config snapshot
    (``run_config``)."""
    deferred = DeferredWrites(journal.clock)

    def work() -> dict[str, Any]:
        conn = connect(journal.path, read_only=True)
        try:
            try:
                sha = get_run(conn, run_id).get("config_sha256")
            except DaqError:
                sha = None
            cfg = run_config(conn, sha)
            return sign(
                deferred,
                conn,
                run_id=run_id,
                meaning=meaning,
                comment=comment,
                user_id=user_id,
                password=password,
                users=cfg.users,
                policy=cfg.signatures,
                clock_state=read_sync_state(cfg.clock.sync_source),
            )
        finally:
            conn.close()

    try:
        return await asyncio.to_thread(work)
    finally:
        deferred.replay(journal)
        await journal.flush()


def audit_detail(sig: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``run_signed`` audit entry repeats of its signature."""
    analyses = sig["analyses"] if isinstance(sig["analyses"], dict) else json.loads(sig["analyses"])
    return {
        "signature_id": sig["signature_id"],
        "meaning": sig["meaning"],
        "printed_name": sig["printed_name"],
        "seal": sig["seal"],
        "analyses": analyses,
        "ts_ns": sig["ts_ns"],
    }
