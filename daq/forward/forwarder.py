"""Store and forward: the loop of one sink's forwarder, composing its four parts.

Contract: an :class:`InfluxForwarder` takes the next batch after the sink's cursor from the
:class:`~daq.forward.outbox.OutboxReader` (a full batch, or a smaller one ``max_age_s`` after
its first reading was committed), has the :class:`~daq.forward.writer.InfluxWriter` send it,
lets the delivery policy (:mod:`daq.forward.policy`) decide what each outcome means (retry with
back-off, bisect and quarantine a poison point, alarm), and moves the cursor only when every
point of the batch was accepted or quarantined. What follows from each request's outcome is
decided in one place (:meth:`InfluxForwarder._send`), and so is what follows from each batch's
(:meth:`InfluxForwarder._forward`). Its :class:`~daq.forward.status.SinkStatus` keeps the
figures, audits alarms and quarantines, and is written to ``<data_dir>/sinks/<name>.json``
every few seconds (for ``daq status --data-dir``).

Nothing is kept only in memory: after a crash, an outage or a restart the forwarder resumes
from its cursor, and since every line is the same on every attempt (same measurement, tags,
fields and nanosecond timestamp), a point sent twice overwrites itself instead of being
duplicated. What each server answer leads to is described in docs/forwarding.md.

The module is longer than most (about 450 lines) because the loop, its stop with the final
drain, and what follows from each request's and each batch's outcome share one state (the
batch in hand and the one read ahead, the witness, the two back-offs, the drain's flags); the
reading, the writing, the policy and the status live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, assert_never

from daq.backoff import Backoff
from daq.clock import Clock
from daq.errors import JournalError
from daq.forward.config import RESOLUTION_NS, InfluxSink
from daq.forward.lineprotocol import LineFormatter
from daq.forward.outbox import Batch, OutboxReader
from daq.forward.policy import (
    Accepted,
    Delivered,
    Delivery,
    Rejected,
    Retry,
    ServerFault,
    Stopped,
    retry_wait,
    settle,
)
from daq.forward.status import SinkStatus, status_file, write_status_file
from daq.forward.writer import InfluxWriter, safe_url
from daq.journal.anchors import SINK_ANCHOR_EVERY_S
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.supervision import TaskTree, fault_point, spawn

log = get_logger("daq.forward")

STATUS_EVERY_S = 2.0
#: How much of a quarantined line its audit entry keeps.
QUARANTINE_LINE_MAX = 2000


class _DrainEnded(Exception):
    """The final drain ends in the middle of a batch (raised through
    :func:`~daq.forward.policy.settle`; the batch's delivery is then :class:`Stopped`)."""


class InfluxForwarder:
    """A daemon service forwarding committed readings to one InfluxDB v2 write endpoint.

    It composes an :class:`~daq.forward.outbox.OutboxReader` (batches after the cursor), an
    :class:`~daq.forward.writer.InfluxWriter` (one request, one outcome), the delivery policy
    (:mod:`daq.forward.policy`) and a :class:`~daq.forward.status.SinkStatus`.
    """

    phase = 1

    def __init__(
        self,
        sink: InfluxSink,
        journal: Journal,
        *,
        site: str,
        cell: str,
        kinds: dict[str, str],
        clock: Clock,
        token: str | None = None,
        rng: random.Random | None = None,
        tasks: TaskTree | None = None,
    ):
        self.sink = sink
        self.tasks = tasks
        self.name = f"sink:{sink.name}"
        #: The name of its task in the daemon's task tree (daq.supervision).
        self.component = f"forwarder:{sink.name}"
        self.journal = journal
        self.clock = clock
        self.rng = rng or random.Random()
        #: Retries of one request body, and of a batch meeting a server fault.
        self._retry = Backoff(sink.backoff_initial_s, sink.backoff_cap_s, rng=self.rng)
        self._fault = Backoff(sink.backoff_initial_s, sink.backoff_cap_s, rng=self.rng)
        self.writer = InfluxWriter(sink, clock=clock, token=token)
        formatter = LineFormatter(
            site=site, cell=cell, kinds=kinds, resolution_ns=RESOLUTION_NS[sink.precision]
        )
        self.outbox = OutboxReader(
            journal, sink.name, formatter, batch_size=sink.batch_size, encode=self.writer.encode
        )
        self.health = SinkStatus(sink.name, journal, clock, retry_every_s=sink.backoff_cap_s)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_since: float | None = None
        self._status_path = status_file(journal.data_dir, sink.name)
        self._last_log = 0.0
        #: Set by stop(): the final drain runs, and a back-off wait ends at once (_pause).
        self._draining = asyncio.Event()
        #: Set by stop() when the final drain's time is over.
        self._drain_over = False
        #: A line this server accepted (see :func:`daq.forward.policy.settle`).
        self._witness: str | None = None

    # -- figures ---------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """The id of the last reading the sink acknowledged (or that was quarantined)."""
        return self.outbox.cursor

    @property
    def pending(self) -> int:
        """Committed readings not yet acknowledged by the sink."""
        return self.outbox.pending

    @property
    def points_written(self) -> int:
        return self.health.points_written

    @property
    def requests(self) -> int:
        return self.writer.requests

    @property
    def retries(self) -> int:
        return self.health.retries

    @property
    def quarantined(self) -> int:
        return self.health.quarantined

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    @property
    def alarm(self) -> str | None:
        return self.health.alarm

    def status(self) -> dict[str, Any]:
        """Per-sink figures for ``daq status`` and the daemon's live status."""
        return {
            "kind": self.sink.kind,
            "url": safe_url(self.sink.url),
            "bucket": self.sink.bucket,
            **self.health.figures(cursor=self.cursor, pending=self.pending, requests=self.requests),
        }

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox (cursor, read-only view of the journal), the writer's client, run."""
        await self.outbox.open()
        await self.writer.open()
        self.journal.on_commit(lambda _committed: self._wake.set())
        self.health.state = "idle"
        log.info(
            "sink started",
            sink=self.sink.name,
            url=safe_url(self.sink.url),
            bucket=self.sink.bucket,
            cursor=self.cursor,
            backlog=self.pending,
        )
        self._tasks = [
            spawn(self.tasks, self.component, "forwarder", self._run, ended=self._draining.is_set),
            spawn(self.tasks, f"{self.component}:status", "forwarder", self._report),
        ]

    async def stop(self, drain_s: float | None = None) -> None:
        """Stop sending, after a final drain of what is committed.

        For up to ``drain_s`` (at most the sink's ``drain_on_stop_s``) the forwarder keeps
        sending without waiting for full batches. It ends itself between requests: a request
        on the wire is never cancelled (it ends within the sink's ``timeout_s``), so the
        server never stores a batch whose acknowledgement was lost, and no request starts
        once the drain's time is over. The drain ends early when a write fails (no retries
        while stopping). A back-off wait in progress ends at once: the write it was waiting
        for is the drain's first. What was not acknowledged stays in the journal for next
        time; it is logged and audited (``sink_drain_incomplete``) with counts.
        """
        drain = (
            self.sink.drain_on_stop_s
            if drain_s is None
            else max(0.0, min(drain_s, self.sink.drain_on_stop_s))
        )
        run = self._tasks[0] if self._tasks else None
        for t in self._tasks[1:]:
            t.cancel()
        if run is not None and not run.done():
            self._draining.set()
            self._wake.set()
            done, _ = await asyncio.wait({run}, timeout=drain)
            if not done:
                self._drain_over = True
                self._wake.set()
                done, _ = await asyncio.wait({run}, timeout=self.sink.timeout_s + 1.0)
            if not done:
                log.error("sink request outlived its timeout; cancelled", sink=self.sink.name)
                run.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("sink task failed", sink=self.sink.name, error=repr(r))
        self._tasks = []
        if run is not None:
            self._drain_report(drain)
        await self.writer.close()
        self.health.state = "stopped"
        if self.outbox.is_open:
            try:
                await self.outbox.flush_cursor()
            except (sqlite3.Error, JournalError, OSError) as exc:
                # What the sink acknowledged since the stored cursor is sent again next time.
                log.error("sink cursor not stored at stop", sink=self.sink.name, error=str(exc))
            with contextlib.suppress(OSError):
                await self.outbox.run(write_status_file, self._status_path, self.status())
            await self.outbox.close()
        log.info("sink stopped", sink=self.sink.name, cursor=self.cursor, backlog=self.pending)

    def _drain_report(self, drain_s: float) -> None:
        left = self.pending
        if not left:
            log.info("sink drained", sink=self.sink.name, cursor=self.cursor)
            return
        detail = {
            "pending": left,
            "forwarded_through_id": self.cursor,
            "drain_s": round(drain_s, 3),
            "last_error": self.last_error,
        }
        log.warning("sink not drained at stop; the rest waits in the journal", sink=self.sink.name, **detail)
        self.journal.audit("sink_drain_incomplete", subject=self.sink.name, detail=detail)

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the clock before a retry. ``False``: no retry, the final drain ends.

        While stopping nothing waits: a write that fails during the final drain ends it (no
        retries while stopping). A stop during the wait ends the wait at once, and the write
        it was waiting for goes out straight away as the drain's first (if the drain's time
        allows), so a server that is back meanwhile still gets what is committed."""
        if self._draining.is_set():
            return False
        name = f"forward-backoff:{self.sink.name}"
        sleep = asyncio.create_task(self.clock.sleep(seconds), name=name)
        stop = asyncio.create_task(self._draining.wait(), name=f"{name}:stop")
        try:
            await asyncio.wait((sleep, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            stop.cancel()
            await asyncio.gather(sleep, stop, return_exceptions=True)
        return not self._drain_over

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            try:
                self.health.oldest_pending_ns = await self.outbox.oldest_pending()
                await self.outbox.run(write_status_file, self._status_path, self.status())
            except (OSError, sqlite3.Error) as exc:
                log.warning("sink status not written", sink=self.sink.name, error=str(exc))
            now = time.monotonic()
            if now - self._last_log >= self.sink.log_every_s:
                self._last_log = now
                s = self.status()
                if s["pending"] or s["points_per_s"] or s["last_error"]:
                    log.info(
                        "sink progress",
                        sink=self.sink.name,
                        pending=s["pending"],
                        oldest_pending_age_s=s["oldest_pending_age_s"],
                        points_per_s=s["points_per_s"],
                        last_error=s["last_error"],
                    )

    # -- the loop ------------------------------------------------------------------------------

    async def _wait_for_batch(self) -> None:
        """Return once a full batch is committed, or the first pending one is ``max_age_s`` old."""
        while True:
            pending = self.pending
            if pending >= self.sink.batch_size or self._draining.is_set():
                return
            timeout: float | None = None
            if pending > 0:
                now = time.monotonic()
                if self._pending_since is None:
                    self._pending_since = now
                timeout = self.sink.max_age_s - (now - self._pending_since)
                if timeout <= 0:
                    return
            else:
                self._pending_since = None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _run(self) -> None:
        while True:
            try:
                await self._forward()
                return  # the final drain is over
            except (sqlite3.Error, JournalError, OSError) as exc:
                # The journal could not be read or the cursor not written: the batches in
                # hand are dropped and read again (their lines come out the same, see
                # OutboxReader.reseed); nothing is skipped.
                self.health.note_error(f"journal: {exc}")
                log.error("sink cannot use the journal; retrying", sink=self.sink.name, error=str(exc))
                if not await self._pause(self.sink.backoff_cap_s):
                    return
                with contextlib.suppress(sqlite3.Error, OSError):
                    await self.outbox.reseed()

    async def _forward(self) -> None:
        """Deliver batch after batch; what follows from each batch's :data:`Delivery` is
        decided here, in one place. Returns when the final drain is over."""
        prefetch: asyncio.Task[Batch | None] | None = None
        try:
            while True:
                if self._draining.is_set() and (self._drain_over or not self.pending):
                    return  # between requests: nothing is cut off
                if prefetch is None:
                    await self._wait_for_batch()
                    batch = await self.outbox.fetch(self.cursor)
                else:
                    batch = await prefetch
                    prefetch = None
                self._pending_since = None
                if batch is None:
                    continue
                if self.journal.last_reading_id - batch.last_id >= self.sink.batch_size:
                    # A backlog: read and format the next batch while this one is on the wire.
                    prefetch = asyncio.create_task(
                        self.outbox.fetch(batch.last_id), name=f"forward-read:{self.sink.name}"
                    )
                self.health.oldest_pending_ns = batch.oldest_acq_ns
                delivery = await self._deliver(batch)
                match delivery:
                    case Delivered(accepted=accepted, poison=poison):
                        # Every point stored or shown to be poison: the poison points are
                        # quarantined (durably), then the cursor passes the batch.
                        self._fault.reset()
                        if accepted:
                            self.health.acknowledged(accepted)
                        await self._quarantine(batch, poison)
                        await self.outbox.advance(batch.last_id)
                        # What a store outside holds is anchored in the journal too (throttled).
                        anchor = f"sink:{self.sink.name}"
                        self.journal.anchors.anchor(anchor, min_interval_s=SINK_ANCHOR_EVERY_S)
                        self.health.state = "idle"
                        fault_point(self.component)
                    case ServerFault(refusal=refusal):
                        # Refused, none shown to be at fault: nothing quarantined, the cursor
                        # stays; alarm, back off, then read the batch again from the cursor
                        # (the backlog behind it may show which point is poison).
                        why = "points refused although not shown to be at fault (server fault)"
                        self.health.raise_alarm(refusal.status, f"{why}: {refusal.message}")
                        self.health.retries += 1
                        await _dropped(prefetch)
                        prefetch = None
                        if not await self._pause(self._fault.next_delay()):
                            return
                    case Stopped():
                        # The final drain ended: the batch waits in the journal.
                        return
                    case _:
                        assert_never(delivery)
        finally:
            await _dropped(prefetch)

    async def _deliver(self, batch: Batch) -> Delivery:
        """Write every line of ``batch`` (see :func:`daq.forward.policy.settle`): delivered,
        a server fault, or stopped (the final drain ended first)."""

        async def send(lines: Sequence[str]) -> Accepted | Rejected:
            return await self._send(batch.body if lines is batch.lines else self.writer.encode(lines))

        try:
            delivery = await settle(batch.lines, send, self._witness)
        except _DrainEnded:
            return Stopped()
        self._witness = delivery.witness
        return delivery

    async def _quarantine(self, batch: Batch, poison: Sequence[tuple[int, Rejected]]) -> None:
        """Audit the poison points of ``batch`` and the readings line protocol cannot carry,
        durably, before the cursor passes them."""
        for index, refusal in poison:
            line = batch.lines[index]
            # The reading itself stays in the journal; the audit keeps enough of the line to see why.
            detail = {
                "status": refusal.status,
                "error": refusal.message,
                "line": line[:QUARANTINE_LINE_MAX],
                "line_length": len(line),
            }
            self.health.quarantine(batch.ids[index], detail)
        for rid, message in batch.unformattable:
            self.health.quarantine(rid, {"status": None, "error": message, "line": None})
        if poison or batch.unformattable:
            # The audit entries must be durable before the cursor passes these readings.
            await self.journal.flush()

    async def _send(self, body: bytes) -> Accepted | Rejected:
        """POST ``body`` until the server accepts or refuses it, backing off meanwhile; what
        follows from each of the writer's outcomes is decided here. Raises :class:`_DrainEnded`
        when the final drain ends first."""
        self._retry.reset()
        while True:
            if self._drain_over:
                raise _DrainEnded  # no request starts once the drain's time is over
            self.health.sending()
            outcome = await self.writer.post(body)
            match outcome:
                case Accepted():
                    # Stored: an outage or an alarm of the sink is over.
                    self.health.reachable(self.pending)
                    return outcome
                case Rejected():
                    # This data is refused: the policy (settle) finds out whose fault it is.
                    return outcome
                case Retry(alarm=True, status=int(status)):
                    # A person must act (token, bucket): one alarm, retries at the cap.
                    self.health.raise_alarm(status, outcome.message.partition(": ")[2])
                case Retry():
                    # Unreachable or "later": the backlog waits in the journal.
                    self.health.outage(outcome.message)
                case _:
                    assert_never(outcome)
            self.health.retries += 1
            wait = retry_wait(outcome, self._retry, retry_after_max_s=self.sink.retry_after_max_s)
            if not await self._pause(wait):
                raise _DrainEnded


async def _dropped(task: asyncio.Task[Batch | None] | None) -> None:
    """Cancel a batch read ahead (``None``: there is none) and wait for it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
