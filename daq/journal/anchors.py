"""Anchors: each chain's head written down, so that rows deleted from the end are detected.

A hash chain shows that no row was changed, inserted or deleted *before* its last row; it
cannot show that rows were deleted *from the end* (the shorter chain is still intact). An
anchor is a chained row of the ``anchors`` table holding, for every other chained table, the
id and chain hash of its last committed row at that moment. ``daq verify`` then requires
every table to reach (at least) the newest anchored id with the anchored hash, and names the
table, the missing id and the anchor otherwise.

Anchors are written by the daemon's journal:

* periodically, on the first commit at least :data:`ANCHOR_EVERY_S` after the previous anchor;
* at every run seal (cause ``seal:<run>``), after the seal's records are committed;
* when a sink acknowledged a batch (cause ``sink:<name>``), at most once every
  :data:`SINK_ANCHOR_EVERY_S` (a sink acknowledges up to several batches a second);
* when the journal is closed (cause ``close``), after its last commit;
* when an export is written while the daemon is stopped (cause ``export:<run>``; with the
  daemon running, the export's own seal is the record kept outside the journal).

An anchor whose heads equal the previous anchor's is not written. What was committed after the
newest anchor is protected only by the chain; so is everything in the ``anchors`` table itself
after its newest row: copies kept outside the journal (sealed exports, the sinks) remain the
independent evidence.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from daq.clock import Clock
from daq.journal import chain
from daq.journal.offline import tail
from daq.journal.schema import CHAINED
from daq.model import iso

if TYPE_CHECKING:
    from daq.model import Reading

TABLE = "anchors"
#: Periodic anchors: at most this often, on a commit.
ANCHOR_EVERY_S = 60.0
#: Anchors on sink acknowledgements: at most this often.
SINK_ANCHOR_EVERY_S = 10.0


def heads_json(heads: dict[str, tuple[int, bytes]]) -> str:
    """The ``heads`` column: canonical JSON ``{table: [id, hash hex]}`` of non-empty tables."""
    out = {t: [int(i), bytes(h).hex()] for t, (i, h) in sorted(heads.items()) if t != TABLE and i > 0}
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


class AnchoredJournal(Protocol):
    """What anchors need of the open journal (:class:`~daq.journal.journal.Journal`, which
    imports this module): its clock, the heads it has committed, and a chained record queued."""

    clock: Clock

    def committed_heads(self) -> dict[str, tuple[int, bytes]]: ...

    def record(self, table: str, values: Mapping[str, Any]) -> int: ...


class Anchors:
    """Writes the anchors of one open :class:`~daq.journal.journal.Journal`."""

    def __init__(self, journal: AnchoredJournal):
        self.journal = journal
        self.last_heads: str | None = None
        self._last_mono = time.monotonic()
        self._last_by_cause: dict[str, float] = {}
        self.written = 0

    def anchor(self, cause: str, *, min_interval_s: float = 0.0) -> bool:
        """Queue an anchor of the heads committed now; ``False`` when none was needed (heads
        unchanged, or one for ``cause`` less than ``min_interval_s`` ago)."""
        if TABLE not in CHAINED:
            return False
        now = time.monotonic()
        if min_interval_s and now - self._last_by_cause.get(cause, -1e18) < min_interval_s:
            return False
        heads = heads_json(self.journal.committed_heads())
        if heads == self.last_heads or heads == "{}":
            return False
        self.last_heads = heads
        self._last_mono = now
        self._last_by_cause[cause] = now
        self.journal.record(TABLE, {"ts_ns": self.journal.clock.time_ns(), "cause": cause, "heads": heads})
        self.written += 1
        return True

    def on_commit(self, readings: list[Reading]) -> None:
        """The periodic anchor (a commit hook)."""
        if time.monotonic() - self._last_mono >= ANCHOR_EVERY_S:
            self.anchor("periodic")


def anchor_offline(conn: sqlite3.Connection, cause: str, ts_ns: int) -> None:
    """Append an anchor inside the caller's write transaction (daemon stopped, lock held)."""
    if TABLE not in CHAINED:
        return
    heads = heads_json({t: tail(conn, t) for t in CHAINED if t != TABLE})
    aid, ah = tail(conn, TABLE)
    row = (aid + 1, ts_ns, cause, heads)
    conn.execute(
        "INSERT INTO anchors (id, ts_ns, cause, heads, hash) VALUES (?,?,?,?,?)",
        (*row, chain.link(ah, chain.payload_for(TABLE, chain.payload_version(conn))(row))),
    )


def anchor_at_close(conn: sqlite3.Connection, anchors: Anchors, ts_ns: int) -> None:
    """The journal's last anchor, written by its closing writer after the last commit (cause
    ``close``), unless the heads are those of its previous anchor."""
    if TABLE not in CHAINED:
        return
    heads = heads_json({t: tail(conn, t) for t in CHAINED if t != TABLE})
    if heads in (anchors.last_heads, "{}"):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        anchor_offline(conn, "close", ts_ns)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    anchors.last_heads = heads


def check(conn: sqlite3.Connection, pruned_through: dict[str, int]) -> tuple[str, str, int] | None:
    """``(problem, table, id)`` for the first table whose chain no longer reaches its newest
    anchored head (``pruned_through``: per table, the last id an audited prune removed)."""
    newest: dict[str, tuple[int, str, int, str, int]] = {}
    for aid, ts_ns, cause, heads in conn.execute(f"SELECT id, ts_ns, cause, heads FROM {TABLE} ORDER BY id"):
        try:
            parsed: dict[str, Any] = json.loads(heads)
        except ValueError:
            return f"anchor {aid}: heads are not JSON", TABLE, int(aid)
        for table, (rid, digest) in parsed.items():
            if table not in newest or int(rid) >= newest[table][0]:
                newest[table] = (int(rid), str(digest), int(aid), str(cause), int(ts_ns))
    for table, (rid, digest, aid, cause, ts_ns) in newest.items():
        if table not in CHAINED or rid <= pruned_through.get(table, 0):
            continue
        row = conn.execute(f"SELECT hash FROM {table} WHERE id = ?", (rid,)).fetchone()
        where = f"anchor {aid} ({cause}, {iso(ts_ns)})"
        if row is None:
            last = conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
            return (
                f"{table}: records after id {last or 0} were deleted: {where} saw the chain reach id {rid}",
                table,
                (last or 0) + 1,
            )
        if bytes(row[0]).hex() != digest:
            return f"{table} record {rid} differs from its hash anchored by {where} (replaced)", table, rid
    return None
