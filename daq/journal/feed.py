"""The live feed: committed readings (and committed rows of other tables, such as
``alarm_events``) fanned out to every live consumer, none of which can slow the journal or
lose a record silently.

After each group commit the journal publishes the committed batch, with the journal id of its
first reading, to its :class:`Feed` (on the event loop, from the writer task). Every live
consumer (each client of the API's live stream, the demo's printer, anything added later)
holds a :class:`FeedSubscription` and takes what was published at its own pace. Publishing
only appends the batch to each subscription's queue: it never waits, never encodes, and costs
O(subscriptions).

**One overflow rule for every consumer.** A subscription holds at most ``max_pending``
readings. When a batch would take it past that, the subscription lets go of everything it
holds and of that batch, and queues one :class:`Gap` in their place instead: the journal ids
``after_id < id <= last_id`` it did not deliver. Later batches queue after the gap as usual
(should they overflow too, the same gap grows). The consumer, on taking the gap, reads that
id range from the journal (:func:`read_range`, on its own read-only connection) and goes on
with the batches after it: no reading is skipped, none is delivered twice, and the journal
writer never waited. A stalled consumer costs at most ``max_pending`` readings of memory.

Readings in a batch take consecutive ids from ``first_id`` (the journal stores the readings of
one commit under consecutive ids), so a batch or a gap is an id range and consumers resume by
journal id, never by acquisition time (which is not monotonic in commit order).

**One mechanism for every table.** :class:`Fanout` and :class:`Subscription` are generic over
the batch they carry (anything with ``first_id`` and ``last_id``, :class:`Published`): the
readings' :class:`Feed` carries :class:`FeedBatch`; the journal's feed of a table written with
``Journal.record`` (:meth:`~daq.journal.journal.Journal.record_feed`, e.g. the alarm
transitions of ``alarm_events``) carries :class:`RecordBatch`, the committed rows with their
ids. Same bound (in rows), same gap, same resume by id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import sqlite3
from typing import Any, Generic, Protocol, TypeVar

from daq.journal import codec
from daq.model import Reading


class FeedBatch:
    """One committed batch: ``readings[i]`` has journal id ``first_id + i`` and sequence number
    ``seqs[i]``. Shared by every subscription; each reading's JSON is encoded at most once,
    whatever the number of consumers."""

    __slots__ = ("_encoded", "first_id", "readings", "seqs")

    def __init__(self, first_id: int, readings: list[Reading], seqs: list[int]):
        self.first_id = first_id
        self.readings = readings
        self.seqs = seqs
        self._encoded: list[bytes | None] = [None] * len(readings)

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.readings) - 1

    def record(self, i: int) -> codec.ReadingRecord:
        """``readings[i]`` as a committed record (with its id and sequence number)."""
        return codec.ReadingRecord(self.first_id + i, self.seqs[i], self.readings[i])

    def records(self) -> list[codec.ReadingRecord]:
        return [self.record(i) for i in range(len(self.readings))]

    def json_line(self, i: int) -> bytes:
        """The JSON object (:func:`codec.json_bytes`) of ``readings[i]`` with its id."""
        data = self._encoded[i]
        if data is None:
            data = self._encoded[i] = codec.json_bytes(self.record(i))
        return data


class RecordBatch:
    """Committed rows of one chained table written with
    :meth:`~daq.journal.journal.Journal.record` (``alarm_events``, ...): ``rows[i]`` is the row
    as stored (columns of :data:`daq.journal.schema.CHAINED` without the hash) and has journal
    id ``first_id + i``."""

    __slots__ = ("first_id", "rows", "table")

    def __init__(self, table: str, first_id: int, rows: list[tuple[Any, ...]]):
        self.table = table
        self.first_id = first_id
        self.rows = rows

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.rows) - 1


class Published(Protocol):
    """What a feed fans out: one committed batch holding the consecutive journal ids
    ``first_id..last_id`` of one table (empty when ``last_id < first_id``)."""

    @property
    def first_id(self) -> int: ...

    @property
    def last_id(self) -> int: ...


B = TypeVar("B", bound=Published)


@dataclasses.dataclass(slots=True)
class Gap:
    """Items a subscription did not deliver because its consumer fell behind: journal ids
    ``after_id < id <= last_id``, ``missed`` of them; read them from the journal."""

    after_id: int
    last_id: int
    missed: int


class Subscription(Generic[B]):
    """One live consumer's bounded queue of batches and :class:`Gap` items, in id order."""

    def __init__(self, feed: Fanout[B], max_pending: int, name: str):
        self.feed = feed
        self.max_pending = max_pending
        self.name = name
        self._items: collections.deque[B | Gap] = collections.deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self.closed = False
        #: Gaps handed out so far, and the items they spanned.
        self.gaps = 0
        self.missed = 0

    @property
    def pending(self) -> int:
        """Items (readings, rows) queued and not yet taken."""
        return self._pending

    def offer(self, batch: B) -> None:
        """Queue ``batch``; never blocks. Past ``max_pending`` items, what is queued and the
        batch become (or extend) a :class:`Gap`."""
        n = batch.last_id - batch.first_id + 1
        if self.closed or n <= 0:
            return
        if self._pending + n <= self.max_pending:
            self._items.append(batch)
            self._pending += n
        else:
            # Queued items are contiguous in id order: the gap starts where the first of them does.
            first = self._items[0] if self._items else batch
            after_id = first.after_id if isinstance(first, Gap) else first.first_id - 1
            missed = n + sum(
                item.missed if isinstance(item, Gap) else item.last_id - item.first_id + 1
                for item in self._items
            )
            self._items.clear()
            self._items.append(Gap(after_id, batch.last_id, missed))
            self._pending = 0
            self.feed.overflows += 1
        self._wake.set()

    def take(self) -> list[B | Gap]:
        """Everything queued, in order (never waits)."""
        items, self._items = list(self._items), collections.deque()
        self._pending = 0
        self._wake.clear()
        for item in items:
            if isinstance(item, Gap):
                self.gaps += 1
                self.missed += item.missed
        return items

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is queued or the subscription is closed, at most ``timeout``
        seconds; True unless the time ran out."""
        if self._items or self.closed:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
                return True
        return False

    async def get(self) -> list[B | Gap]:
        """The items queued, waiting for at least one; ``[]`` once the subscription is closed."""
        while not self._items and not self.closed:
            await self.wait()
        return self.take()

    def close(self) -> None:
        """Stop receiving; a consumer waiting in :meth:`wait` or :meth:`get` returns."""
        self.closed = True
        self._items.clear()
        self._pending = 0
        self.feed.unsubscribe(self)
        self._wake.set()

    def __enter__(self) -> Subscription[B]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A subscription to the readings' feed.
FeedSubscription = Subscription[FeedBatch]


class Fanout(Generic[B]):
    """Committed batches of one journal table, fanned out to :class:`Subscription` s: the one
    mechanism of every live consumer (the readings' :class:`Feed`, and the rows of a table
    written with :meth:`~daq.journal.journal.Journal.record`, such as ``alarm_events``)."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription[B]] = set()
        #: Times a subscription overflowed (its consumer then read the gap from the journal).
        self.overflows = 0
        self.closed = False

    def subscribe(self, max_pending: int, name: str) -> Subscription[B]:
        """A new subscription receiving every batch published from now on (``name`` says
        who consumes it, for status and logs)."""
        sub = Subscription(self, max_pending, name)
        if self.closed:
            sub.closed = True
        else:
            self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[B]) -> None:
        self.subscriptions.discard(sub)

    def offer(self, batch: B) -> None:
        """Hand a committed batch to every subscription."""
        for sub in tuple(self.subscriptions):
            sub.offer(batch)

    def close(self) -> None:
        """Close every subscription (the journal is closing)."""
        self.closed = True
        for sub in tuple(self.subscriptions):
            sub.close()


class Feed(Fanout[FeedBatch]):
    """The journal's committed readings, fanned out to subscriptions."""

    def publish(self, first_id: int, readings: list[Reading], seqs: list[int]) -> None:
        """Hand a committed batch to every subscription (``readings[i]`` has id ``first_id + i``
        and sequence number ``seqs[i]``)."""
        if not self.subscriptions or not readings:
            return
        self.offer(FeedBatch(first_id, readings, seqs))


def read_range(
    conn: sqlite3.Connection, after_id: int, *, last_id: int | None = None, limit: int
) -> list[codec.ReadingRecord]:
    """Committed readings with ``after_id < id`` (and ``id <= last_id`` when given), in id
    order, at most ``limit`` of them: how a consumer fills a :class:`Gap` or resumes after the
    last id it saw. ``conn`` is a read-only connection to the journal."""
    cols = ", ".join(codec.READING_COLUMNS)
    if last_id is None:
        cur = conn.execute(f"SELECT {cols} FROM readings WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
    else:
        cur = conn.execute(
            f"SELECT {cols} FROM readings WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (after_id, last_id, limit),
        )
    return [codec.record(values) for values in cur]


__all__ = [
    "Fanout",
    "Feed",
    "FeedBatch",
    "FeedSubscription",
    "Gap",
    "Published",
    "RecordBatch",
    "Subscription",
    "read_range",
]
