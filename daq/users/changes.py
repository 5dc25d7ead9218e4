"""Changes to accounts, each audited (refusals too): created by an admin (the first account is
an admin created without one), a password changed by its user or an admin, an account
disabled for good or unlocked. :func:`journal_session` opens the journal for them while
holding the data directory's lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from daq.clock import Clock, SystemClock
from daq.journal.journal import Journal
from daq.runs.qc_settings import UsersSection
from daq.users.records import (
    ROLES,
    USER_ID_PATTERN,
    Account,
    UserError,
    Writes,
    accounts,
    authenticate,
    check_password,
    hash_password,
    password_matches,
    record_change,
    refusal,
)


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


def _require_admin(
    journal: Writes,
    conn: sqlite3.Connection,
    admin: tuple[str, str] | None,
    settings: UsersSection,
    what: str,
) -> str:
    if admin is None:
        raise refusal(
            journal, "user_change_refused", "-", "-", f"{what} needs an admin's user id and password"
        )
    acct = authenticate(journal, conn, admin[0], admin[1], settings, purpose=what)
    if "admin" not in acct.roles:
        raise refusal(
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
            raise refusal(
                journal, "user_change_refused", actor, user_id, "the first account must have the admin role"
            )
    if not re.match(USER_ID_PATTERN, user_id):
        raise refusal(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"user id {user_id!r} must match {USER_ID_PATTERN} (lower case)",
        )
    if user_id in existing:
        raise refusal(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"user id {user_id!r} exists already (ids are never reused)",
        )
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise refusal(
            journal,
            "user_change_refused",
            actor,
            user_id,
            f"roles must be among {', '.join(ROLES)} (got {', '.join(roles) or 'none'})",
        )
    if not full_name.strip():
        raise refusal(journal, "user_change_refused", actor, user_id, "the full name must not be empty")
    try:
        check_password(password, settings)
    except UserError as exc:
        raise refusal(journal, "user_change_refused", actor, user_id, str(exc)) from None
    roles = sorted(set(roles), key=ROLES.index)
    pw_hash = hash_password(password)
    record_change(
        journal, user_id, "created", actor, full_name=full_name.strip(), roles=roles, pw_hash=pw_hash
    )
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
        raise refusal(journal, "user_change_refused", signer[0] or "-", user_id, f"no user {user_id!r}")
    by = authenticate(journal, conn, signer[0], signer[1], settings, purpose="users passwd")
    if by.user_id != user_id and "admin" not in by.roles:
        raise refusal(
            journal,
            "user_change_refused",
            by.user_id,
            user_id,
            f"{by.user_id} may change only their own password (not an admin)",
        )
    if not acct.active:
        raise refusal(journal, "user_change_refused", by.user_id, user_id, f"{user_id} is disabled")
    try:
        check_password(new_password, settings)
    except UserError as exc:
        raise refusal(journal, "user_change_refused", by.user_id, user_id, str(exc)) from None
    if password_matches(acct.pw_hash, new_password):
        raise refusal(
            journal, "user_change_refused", by.user_id, user_id, "the new password equals the old one"
        )
    record_change(journal, user_id, "password_changed", by.user_id, pw_hash=hash_password(new_password))
    journal.audit(
        "user_password_changed", actor=by.user_id, subject=user_id, detail={"by_admin": by.user_id != user_id}
    )


def _active_account(
    journal: Writes, conn: sqlite3.Connection, settings: UsersSection, actor: str, user_id: str
) -> Account:
    """``user_id``'s account when it is active; otherwise the change is refused (and audited)."""
    acct = accounts(conn, settings).get(user_id)
    if acct is None or not acct.active:
        raise refusal(journal, "user_change_refused", actor, user_id, f"no active user {user_id!r}")
    return acct


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
    _active_account(journal, conn, settings, actor, user_id)
    if not reason.strip():
        raise refusal(journal, "user_change_refused", actor, user_id, "give the reason")
    record_change(journal, user_id, "disabled", actor, detail={"reason": reason})
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
    acct = _active_account(journal, conn, settings, actor, user_id)
    record_change(journal, user_id, "unlocked", actor, detail={"reason": reason, "failures": acct.failures})
    journal.audit(
        "user_unlocked", actor=actor, subject=user_id, detail={"reason": reason, "failures": acct.failures}
    )
