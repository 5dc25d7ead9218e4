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

from daq.users.changes import add_user, change_password, disable_user, journal_session, unlock_user
from daq.users.records import (
    ROLES,
    USER_ID_PATTERN,
    Account,
    AuthError,
    Role,
    UserError,
    Writes,
    accounts,
    authenticate,
    check_password,
    fold,
    hash_password,
    user_at,
)

__all__ = [
    "ROLES",
    "USER_ID_PATTERN",
    "Account",
    "AuthError",
    "Role",
    "UserError",
    "Writes",
    "accounts",
    "add_user",
    "authenticate",
    "change_password",
    "check_password",
    "disable_user",
    "fold",
    "hash_password",
    "journal_session",
    "unlock_user",
    "user_at",
]
