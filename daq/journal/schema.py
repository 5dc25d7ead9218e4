"""The journal's schema and its migrations.

Versioned in ``meta.schema_version``; each migration is a list of statements applied in one
transaction. Tables named in :data:`CHAINED` are append-only (triggers reject UPDATE and
DELETE) and hash-chained; ``sink_cursors`` is the only mutable table (forwarder state).

To add a chained table: add a migration that creates it (``id INTEGER PRIMARY KEY`` first,
``hash BLOB NOT NULL`` last) plus ``*guards(name)``, and list its columns in :data:`CHAINED`
(``id`` first, ``hash`` excluded). Write to it with :meth:`daq.journal.Journal.record`.
Columns declared REAL must be given Python floats (SQLite would turn an int into a float and
the hash would no longer match); prefer INTEGER, TEXT (JSON) and BLOB columns.
"""

from __future__ import annotations

import sqlite3

from daq.journal import chain

#: Append-only, hash-chained tables and their hashed columns (``id`` first, ``hash`` excluded),
#: in the order they are verified.
CHAINED: dict[str, tuple[str, ...]] = {
    "readings": (
        "id", "instrument", "channel", "seq", "acq_ns", "mono_ns", "device_ns", "value", "unit",
        "quality", "reason", "raw", "attrs", "run_id",
    ),
    "events": ("id", "instrument", "kind", "ts_ns", "mono_ns", "detail", "raw"),
    "audit": ("id", "ts_ns", "mono_ns", "actor", "action", "subject", "detail", "run_id"),
    # Migration 3 (runs): run start/stop/annotation/t0, config snapshots, prune checkpoints.
    "run_events": ("id", "run_id", "kind", "ts_ns", "mono_ns", "actor", "reason", "instrument", "detail"),
    "configs": ("id", "ts_ns", "sha256", "path", "text"),
    "prunes": ("id", "ts_ns", "actor", "table_name", "through_id", "through_hash", "rows", "detail"),
    # Migration 2 (radio-TLC): raw chromatograms and their analyses (re-integration appends).
    "traces": ("id", "trace_id", "instrument", "run_id", "started_ns", "ended_ns", "complete", "params",
               "positions_mm", "counts", "raw"),
    "analyses": ("id", "analysis_id", "trace_id", "run_id", "ts_ns", "method", "method_version", "actor",
                 "reason", "supersedes", "results"),
    # Migration 4 (users and e-signatures): account records (never deleted) and run signatures.
    "users": ("id", "user_id", "kind", "ts_ns", "actor", "full_name", "roles", "pw_hash", "detail"),
    "signatures": ("id", "signature_id", "run_id", "ts_ns", "mono_ns", "user_id", "printed_name", "meaning",
                   "comment", "clock", "seal", "analyses", "detail"),
    # Migration 5 (anchors): each chain's head (last id and hash) at a point in time, so that
    # rows deleted from the end of a chain are detected (daq.journal.anchors).
    "anchors": ("id", "ts_ns", "cause", "heads"),
    # Migration 6 (alarms): each alarm's life, one row per transition (daq.alarms.engine).
    "alarm_events": ("id", "alarm_id", "kind", "ts_ns", "mono_ns", "instrument", "channel", "condition",
                     "severity", "state", "actor", "comment", "run_id", "detail"),
}  # fmt: skip

CHAINED_TABLES = tuple(CHAINED)


def guards(table: str) -> list[str]:
    """The triggers that make ``table`` append-only."""
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'journal is append-only: {table} rows cannot be changed'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'journal is append-only: {table} rows cannot be deleted'); END",
    ]


#: Names of the guard triggers; verification fails when one is missing.
GUARD_TRIGGERS = tuple(f"{t}_{op}" for t in CHAINED for op in ("no_update", "no_delete"))

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE readings (
            id INTEGER PRIMARY KEY,
            instrument TEXT NOT NULL,
            channel TEXT NOT NULL,
            seq INTEGER NOT NULL,
            acq_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            device_ns INTEGER,
            value REAL,
            unit TEXT NOT NULL,
            quality INTEGER NOT NULL,
            reason TEXT,
            raw BLOB,
            attrs TEXT,
            run_id TEXT,
            hash BLOB NOT NULL)""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            instrument TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            detail TEXT,
            raw BLOB,
            hash BLOB NOT NULL)""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT,
            run_id TEXT,
            hash BLOB NOT NULL)""",
        """CREATE TABLE sink_cursors (
            sink TEXT PRIMARY KEY,
            last_id INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL)""",
        *guards("readings"),
        *guards("events"),
        *guards("audit"),
    ],
    2: [
        """CREATE TABLE traces (
            id INTEGER PRIMARY KEY,
            trace_id TEXT NOT NULL,
            instrument TEXT NOT NULL,
            run_id TEXT,
            started_ns INTEGER NOT NULL,
            ended_ns INTEGER,
            complete INTEGER NOT NULL,
            params TEXT NOT NULL,
            positions_mm TEXT NOT NULL,
            counts TEXT NOT NULL,
            raw BLOB,
            hash BLOB NOT NULL)""",
        "CREATE INDEX traces_trace_id ON traces (trace_id)",
        "CREATE INDEX traces_run ON traces (run_id)",
        """CREATE TABLE analyses (
            id INTEGER PRIMARY KEY,
            analysis_id TEXT NOT NULL,
            trace_id TEXT NOT NULL,
            run_id TEXT,
            ts_ns INTEGER NOT NULL,
            method TEXT,
            method_version TEXT,
            actor TEXT NOT NULL,
            reason TEXT,
            supersedes TEXT,
            results TEXT NOT NULL,
            hash BLOB NOT NULL)""",
        "CREATE INDEX analyses_trace ON analyses (trace_id)",
        "CREATE INDEX analyses_run ON analyses (run_id)",
        *guards("traces"),
        *guards("analyses"),
    ],
    3: [
        """CREATE TABLE run_events (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT,
            instrument TEXT,
            detail TEXT,
            hash BLOB NOT NULL)""",
        "CREATE INDEX run_events_run ON run_events (run_id)",
        """CREATE TABLE configs (
            id INTEGER PRIMARY KEY,
            ts_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT,
            text TEXT NOT NULL,
            hash BLOB NOT NULL)""",
        # A prune checkpoint: rows of table_name up to through_id were deleted; through_hash is
        # the chain hash of the last deleted row, where verification of the rest starts.
        """CREATE TABLE prunes (
            id INTEGER PRIMARY KEY,
            ts_ns INTEGER NOT NULL,
            actor TEXT NOT NULL,
            table_name TEXT NOT NULL,
            through_id INTEGER NOT NULL,
            through_hash TEXT NOT NULL,
            rows INTEGER NOT NULL,
            detail TEXT,
            hash BLOB NOT NULL)""",
        *guards("run_events"),
        *guards("configs"),
        *guards("prunes"),
    ],
    4: [
        # One row per account change (created, password_changed, disabled, unlocked); an
        # account's state is the fold of its rows (daq.users).
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            actor TEXT NOT NULL,
            full_name TEXT,
            roles TEXT,
            pw_hash TEXT,
            detail TEXT,
            hash BLOB NOT NULL)""",
        "CREATE INDEX users_user ON users (user_id)",
        # An electronic signature of a sealed run: who, the meaning, when (with the clock's
        # state) and the hashes signed (the run's seal and the analysis versions it covers).
        """CREATE TABLE signatures (
            id INTEGER PRIMARY KEY,
            signature_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            printed_name TEXT NOT NULL,
            meaning TEXT NOT NULL,
            comment TEXT,
            clock TEXT,
            seal TEXT NOT NULL,
            analyses TEXT NOT NULL,
            detail TEXT,
            hash BLOB NOT NULL)""",
        "CREATE INDEX signatures_run ON signatures (run_id)",
        *guards("users"),
        *guards("signatures"),
    ],
    5: [
        # heads: canonical JSON {table: [last id, chain hash hex]} of every other chained table.
        """CREATE TABLE anchors (
            id INTEGER PRIMARY KEY,
            ts_ns INTEGER NOT NULL,
            cause TEXT NOT NULL,
            heads TEXT NOT NULL,
            hash BLOB NOT NULL)""",
        *guards("anchors"),
    ],
    6: [
        # kind: raised, acknowledged, cleared; state: the alarm's ISA-18.2 state after it.
        """CREATE TABLE alarm_events (
            id INTEGER PRIMARY KEY,
            alarm_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            instrument TEXT NOT NULL,
            channel TEXT NOT NULL,
            condition TEXT NOT NULL,
            severity TEXT NOT NULL,
            state TEXT NOT NULL,
            actor TEXT NOT NULL,
            comment TEXT,
            run_id TEXT,
            detail TEXT,
            hash BLOB NOT NULL)""",
        "CREATE INDEX alarm_events_alarm ON alarm_events (alarm_id)",
        "CREATE INDEX alarm_events_run ON alarm_events (run_id)",
        *guards("alarm_events"),
    ],
}


#: The newest schema this code writes.
SCHEMA_VERSION = max(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if row is None:
        return 0
    value = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(value[0]) if value else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found before."""
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        from daq.errors import JournalError

        raise JournalError(f"journal schema version {found} is newer than this daq ({SCHEMA_VERSION})")
    for version in sorted(v for v in MIGRATIONS if v > found):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[version]:
                conn.execute(stmt)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
            if found == 0:
                # A new journal is hashed with the newest payload encoding; an existing one keeps
                # the encoding its rows were written with (no key: version 1).
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    (chain.META_KEY, str(chain.PAYLOAD_VERSION)),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found
