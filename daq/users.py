"""Local user accounts for review and electronic signatures (21 CFR Part 11, EU GMP Annex 11).

Accounts live in the journal's ``users`` table, one hash-chained row per change: ``created``
(full name, roles, password hash), ``password_changed``, ``disabled`` and ``unlocked``. Rows
are never updated or deleted, so an account's history is its rows and its state is their fold
(:func:`accounts`). A user id once created is never reused.

Passwords are hashed with argon2id (argon2-cffi's RFC 9106 low-memory profile) and never stored
or logged in clear. Every change and every failed sign-in goes to the audit trail
(``user_created``, ``user_password_changed``, ``user_disabled``, ``user_unlocked``,
``auth_failed``, ``account_locked``, ``auth_ok``). After ``[users] max_failed_attempts`` failures
in a row an account is locked until an admin unlocks it or sets a new password.

Writers (:func:`journal_session`) hold the data directory's ``daemon.lock``: the daemon keeps
each chain's tail in memory, so these commands run while it is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from daq.clock import Clock, SystemClock
from daq.errors import DaqError
from daq.journal.journal import Journal, dumps
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


def _password_matches(pw_hash: str | None, password: str) -> bool:
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


# -- writing ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def journal_session(data_dir: Path, clock: Clock | None = None) -> AsyncIterator[Journal]:
    """The journal of ``data_dir`` opened for writing while holding its ``daemon.lock``
    (refused while a daemon runs there); everything queued is committed on exit, also when
    the body raises, so a refusal's audit entry is never lost."""
    from daq.journal.lock import take_lock

    lock = take_lock(Path(data_dir))
    try:
        journal = await Journal.open(Path(data_dir), clock=clock or SystemClock())
        try:
            yield journal
        finally:
            await journal.flush()
            await journal.close()
    finally:
        lock.close()


def _row(
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


def _refuse(journal: Writes, action: str, actor: str, subject: str, reason: str, **detail: Any) -> UserError:
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
    if not _password_matches(acct.pw_hash, password):
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


def _require_admin(
    journal: Writes,
    conn: sqlite3.Connection,
    admin: tuple[str, str] | None,
    settings: UsersSection,
    what: str,
) -> str:
    if admin is None:
        raise _refuse(
            journal, "user_change_refused", "-", "-", f"{what} needs an admin's user id and password"
        )
    acct = authenticate(journal, conn, admin[0], admin[1], settings, purpose=what)
    if "admin" not in acct.roles:
        raise _refuse(
            journal, "user_change_refused", acct.user_id, acct.user_id, f"{acct.user_id} is not an admin"
        )
    return acct.user_id


def add_user(
    journal: Writes,
    conn: sqlite3.Connection,
    *,
    user_id: str,
    full_name: str,
    roles: list[str],
    password: str,
    admin: tuple[str, str] | None,
    settings: UsersSection,
) -> Account:
    """Create an account. The first account of a journal must be an admin and needs no
    sign-in; every later one is created by an admin (``admin`` = id and password)."""
    import re

    existing = accounts(conn, settings)
    if existing:
        actor = _require_admin(journal, conn, admin, settings, "users add")
    else:
        actor = user_id
        if "admin" not in roles:
            raise _refuse(
                journal, "user_change_refused", actor, user_id, "the first account must have the admin role"
            )
    if not re.match(USER_ID_PATTERN, user_id):
        raise _refuse(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"user id {user_id!r} must match {USER_ID_PATTERN} (lower case)",
        )
    if user_id in existing:
        raise _refuse(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"user id {user_id!r} exists already (ids are never reused)",
        )
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise _refuse(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"roles must be among {', '.join(ROLES)} (got {', '.join(roles) or 'none'})",
        )
    if not full_name.strip():
        raise _refuse(journal, "user_change_refused", actor, user_id, "the full name must not be empty")
    try:
        check_password(password, settings)
    except UserError as exc:
        raise _refuse(journal, "user_change_refused", actor, user_id, str(exc)) from None
    roles = sorted(set(roles), key=ROLES.index)
    pw_hash = hash_password(password)
    _row(journal, user_id, "created", actor, full_name=full_name.strip(), roles=roles, pw_hash=pw_hash)
    journal.audit(
        "user_created",
        actor=actor,
        subject=user_id,
        detail={"full_name": full_name.strip(), "roles": roles},
    )
    return Account(user_id, full_name.strip(), tuple(roles), pw_hash, created_by=actor)


def change_password(
    journal: Writes,
    conn: sqlite3.Connection,
    *,
    user_id: str,
    new_password: str,
    signer: tuple[str, str],
    settings: UsersSection,
) -> None:
    """Set ``user_id``'s password: the user with their current password, or an admin with theirs
    (which also lifts a lockout)."""
    acct = accounts(conn, settings).get(user_id)
    if acct is None:
        raise _refuse(journal, "user_change_refused", signer[0] or "-", user_id, f"no user {user_id!r}")
    by = authenticate(journal, conn, signer[0], signer[1], settings, purpose="users passwd")
    if by.user_id != user_id and "admin" not in by.roles:
        raise _refuse(
            journal,
            "user_change_refused",
            by.user_id,
            user_id,
            f"{by.user_id} may change only their own password (not an admin)",
        )
    if not acct.active:
        raise _refuse(journal, "user_change_refused", by.user_id, user_id, f"{user_id} is disabled")
    try:
        check_password(new_password, settings)
    except UserError as exc:
        raise _refuse(journal, "user_change_refused", by.user_id, user_id, str(exc)) from None
    if _password_matches(acct.pw_hash, new_password):
        raise _refuse(
            journal, "user_change_refused", by.user_id, user_id, "the new password equals the old one"
        )
    _row(journal, user_id, "password_changed", by.user_id, pw_hash=hash_password(new_password))
    journal.audit(
        "user_password_changed", actor=by.user_id, subject=user_id, detail={"by_admin": by.user_id != user_id}
    )


def disable_user(
    journal: Writes,
    conn: sqlite3.Connection,
    *,
    user_id: str,
    reason: str,
    admin: tuple[str, str],
    settings: UsersSection,
) -> None:
    """Disable ``user_id`` for good (the account and its signatures stay in the record)."""
    actor = _require_admin(journal, conn, admin, settings, "users disable")
    acct = accounts(conn, settings).get(user_id)
    if acct is None or not acct.active:
        raise _refuse(journal, "user_change_refused", actor, user_id, f"no active user {user_id!r}")
    if not reason.strip():
        raise _refuse(journal, "user_change_refused", actor, user_id, "give the reason")
    _row(journal, user_id, "disabled", actor, detail={"reason": reason})
    journal.audit("user_disabled", actor=actor, subject=user_id, detail={"reason": reason})


def unlock_user(
    journal: Writes,
    conn: sqlite3.Connection,
    *,
    user_id: str,
    reason: str,
    admin: tuple[str, str],
    settings: UsersSection,
) -> None:
    """Lift ``user_id``'s lockout (the failures stay in the audit trail)."""
    actor = _require_admin(journal, conn, admin, settings, "users unlock")
    acct = accounts(conn, settings).get(user_id)
    if acct is None or not acct.active:
        raise _refuse(journal, "user_change_refused", actor, user_id, f"no active user {user_id!r}")
    _row(journal, user_id, "unlocked", actor, detail={"reason": reason, "failures": acct.failures})
    journal.audit(
        "user_unlocked", actor=actor, subject=user_id, detail={"reason": reason, "failures": acct.failures}
    )
