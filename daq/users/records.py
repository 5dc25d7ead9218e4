"""Accounts: their state folded from the ``users`` table's rows, passwords hashed with argon2id,
a user's state at a time (for signatures), the change rows themselves, and signing in
(:func:`authenticate`: failures counted and audited, an account locked after too many).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from daq.clock import Clock
from daq.errors import DaqError
from daq.journal.journal import dumps
from daq.runs.qc_settings import UsersSection

Role = Literal["operator", "reviewer", "approver", "admin"]
ROLES: tuple[str, ...] = ("operator", "reviewer", "approver", "admin")
USER_ID_PATTERN = r"^[a-z][a-z0-9_.-]{1,31}$"


class Writes(Protocol):
    """What these functions write through: the journal (or a stand-in that defers the writes
    to the event loop, :class:`daq.runs.signatures.DeferredWrites`)."""

    clock: Clock

    def audit(
        self,
        action: str,
        *,
        actor: str = ...,
        subject: str | None = ...,
        detail: Mapping[str, Any] | None = ...,
        run_id: str | None = ...,
    ) -> None: ...

    def record(self, table: str, values: Mapping[str, Any]) -> int: ...


class UserError(DaqError):
    """A user-account operation was refused (the refusal is in the audit trail)."""


class AuthError(UserError):
    """A sign-in was refused: unknown user, wrong password, disabled or locked account."""


_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_matches(pw_hash: str | None, password: str) -> bool:
    if not pw_hash:
        return False
    try:
        return bool(_HASHER.verify(pw_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclasses.dataclass
class Account:
    """One account, folded from its ``users`` rows and its sign-in audit entries."""

    user_id: str
    full_name: str
    roles: tuple[str, ...]
    pw_hash: str | None
    active: bool = True
    created_ns: int = 0
    created_by: str = ""
    #: When the failure count last restarted (creation, new password, unlock).
    reset_ns: int = 0
    failures: int = 0
    locked: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """What ``daq users list`` shows (never the password hash)."""
        return {
            "user_id": self.user_id,
            "full_name": self.full_name,
            "roles": list(self.roles),
            "active": self.active,
            "locked": self.locked,
            "failed_attempts": self.failures,
            "created_ns": self.created_ns,
            "created_by": self.created_by,
        }


def fold(
    user_rows: Iterable[dict[str, Any]], audit_rows: Iterable[dict[str, Any]], *, max_failed: int
) -> dict[str, Account]:
    """Accounts from ``users`` rows and the ``auth_*`` audit entries (both in id order)."""
    out: dict[str, Account] = {}
    for row in user_rows:
        uid, kind = row["user_id"], row["kind"]
        if kind == "created":
            out[uid] = Account(
                uid,
                row["full_name"] or uid,
                tuple(json.loads(row["roles"] or "[]")),
                row["pw_hash"],
                created_ns=row["ts_ns"],
                created_by=row["actor"],
                reset_ns=row["ts_ns"],
            )
        acct = out.get(uid)
        if acct is None:
            continue
        if kind == "password_changed":
            acct.pw_hash = row["pw_hash"]
            acct.reset_ns = row["ts_ns"]
        elif kind == "disabled":
            acct.active = False
        elif kind == "unlocked":
            acct.reset_ns = row["ts_ns"]
        acct.history.append({k: row[k] for k in ("id", "kind", "ts_ns", "actor")})
    for a in audit_rows:
        acct = out.get(a["subject"] or "")
        if acct is None or a["ts_ns"] < acct.reset_ns:
            continue
        if a["action"] == "auth_ok":
            acct.failures = 0
        elif a["action"] == "auth_failed":
            acct.failures += 1
    for acct in out.values():
        acct.locked = acct.failures >= max_failed
    return out


def accounts(conn: sqlite3.Connection, settings: UsersSection | None = None) -> dict[str, Account]:
    """Every account of the journal behind ``conn``, by user id."""
    settings = settings or UsersSection()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='users'").fetchone() is None:
        return {}
    cols = ("id", "user_id", "kind", "ts_ns", "actor", "full_name", "roles", "pw_hash")
    users = [
        dict(zip(cols, r, strict=True))
        for r in conn.execute(f"SELECT {', '.join(cols)} FROM users ORDER BY id")
    ]
    acols = ("id", "ts_ns", "action", "subject")
    audit = [
        dict(zip(acols, r, strict=True))
        for r in conn.execute(
            f"SELECT {', '.join(acols)} FROM audit WHERE action IN ('auth_ok', 'auth_failed') ORDER BY id"
        )
    ]
    return fold(users, audit, max_failed=settings.max_failed_attempts)


def user_at(conn: sqlite3.Connection, user_id: str, ts_ns: int) -> dict[str, Any] | None:
    """The account ``user_id`` as it stood at ``ts_ns`` (full name, roles, active), or ``None``
    if it did not exist then. Used to check a signature against its signer's account."""
    rows = conn.execute(
        "SELECT kind, full_name, roles FROM users WHERE user_id = ? AND ts_ns <= ? ORDER BY id",
        (user_id, ts_ns),
    ).fetchall()
    state: dict[str, Any] | None = None
    for kind, full_name, roles in rows:
        if kind == "created":
            state = {"full_name": full_name, "roles": json.loads(roles or "[]"), "active": True}
        elif state is not None and kind == "disabled":
            state["active"] = False
    return state


def check_password(password: str, settings: UsersSection) -> None:
    if len(password) < settings.min_password_length:
        raise UserError(f"the password must have at least {settings.min_password_length} characters")
    if not password.strip():
        raise UserError("the password must not be blank")


def record_change(
    journal: Writes,
    user_id: str,
    kind: str,
    actor: str,
    *,
    full_name: str | None = None,
    roles: Iterable[str] | None = None,
    pw_hash: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    journal.record(
        "users",
        {
            "user_id": user_id,
            "kind": kind,
            "ts_ns": journal.clock.time_ns(),
            "actor": actor,
            "full_name": full_name,
            "roles": None if roles is None else json.dumps(list(roles)),
            "pw_hash": pw_hash,
            "detail": dumps(detail),
        },
    )


def refusal(journal: Writes, action: str, actor: str, subject: str, reason: str, **detail: Any) -> UserError:
    journal.audit(action, actor=actor, subject=subject, detail={"refused": reason, **detail})
    return UserError(reason)


def authenticate(
    journal: Writes,
    conn: sqlite3.Connection,
    user_id: str,
    password: str,
    settings: UsersSection,
    *,
    purpose: str,
    run_id: str | None = None,
) -> Account:
    """Check ``user_id``'s password; audit the outcome (``auth_ok`` or ``auth_failed`` with the
    reason, and ``account_locked`` when this failure locks the account). Raises :class:`AuthError`."""
    acct = accounts(conn, settings).get(user_id)
    rid = run_id

    def fail(reason: str) -> AuthError:
        journal.audit(
            "auth_failed",
            actor=user_id or "-",
            subject=user_id or "-",
            run_id=rid,
            detail={"reason": reason, "purpose": purpose},
        )
        return AuthError(f"sign-in refused for {user_id!r}: {reason}")

    if acct is None:
        raise fail("unknown user")
    if not acct.active:
        raise fail("account disabled")
    if acct.locked:
        raise fail(f"account locked after {acct.failures} failed attempts; an admin must unlock it")
    if not password_matches(acct.pw_hash, password):
        err = fail("wrong password")
        if acct.failures + 1 >= settings.max_failed_attempts:
            journal.audit(
                "account_locked",
                actor="daq",
                subject=user_id,
                run_id=rid,
                detail={"failed_attempts": acct.failures + 1, "purpose": purpose},
            )
        raise err
    journal.audit("auth_ok", actor=user_id, subject=user_id, run_id=rid, detail={"purpose": purpose})
    return acct
