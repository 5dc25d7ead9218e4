"""Store and forward: one forwarder per sink, reading the journal from its own cursor.

The journal is the outbox. A forwarder reads readings in commit order (by id) after its
cursor (``sink_cursors``), formats them as line protocol, and writes them to the InfluxDB v2
write API through influxdb-client's async client; the cursor advances only after the server
answered 2xx (or a point was quarantined, see below). Nothing is kept only in memory: after a
crash, an outage or a restart the forwarder resumes from its cursor, and since every line is
the same on every attempt (same measurement, tags, fields and nanosecond timestamp), a point
sent twice overwrites itself instead of being duplicated.

Errors:

* 5xx, 408, 429, timeouts and connection errors: retry the same batch, backing off from
  ``backoff_initial_s`` doubling (with jitter) to ``backoff_cap_s``, for as long as it
  takes; a 429's ``Retry-After`` is honoured. The backlog waits in the journal.
* 400, 413, 422 (the server refuses the data): the batch is bisected until the refused
  points are isolated; a point is *quarantined* only when it is shown to be poison (refused
  again while the same server accepts another point right after, see
  :mod:`daq.forward.policy`): an audit entry ``sink_quarantine`` (subject = the sink) records
  the reading id, the line, the status and the server's message, and the rest is written.
  Otherwise (a server refusing everything, or recovering meanwhile) it is a server fault:
  nothing is quarantined, the sink is in alarm and the batch is read again and retried with
  back-off.
* 401, 403 and other 4xx (a bad token, a missing bucket): one alarm (audit entry
  ``sink_alarm`` and one error log line), then retries at ``backoff_cap_s``, no storm; when
  writes succeed again, ``sink_alarm_cleared`` is audited.
* A reading that line protocol cannot carry (a newline in a tag) is quarantined the same
  way without being sent.

``status()`` gives backlog, age of the oldest pending reading, points written per second and
the last error; the same figures are written to ``<data_dir>/sinks/<name>.json`` every few
seconds (for ``daq status --data-dir``) and logged every ``log_every_s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import gzip
import json
import random
import sqlite3
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

import aiohttp

from daq.clock import Clock
from daq.errors import JournalError
from daq.forward.config import RESOLUTION_NS, InfluxSink
from daq.forward.lineprotocol import ROW_SELECT, LineFormatter, LineProtocolError, Row
from daq.forward.policy import Accepted, Outcome, Rejected, Retry, classify, settle
from daq.forward.status import status_file, write_status_file
from daq.journal.anchors import SINK_ANCHOR_EVERY_S
from daq.journal.codec import LINE_ACQ_NS, LINE_ID, LINE_INSTRUMENT
from daq.journal.journal import Journal, connect
from daq.logs import get_logger
from daq.secrets import resolve_secret
from daq.supervision import TaskTree, fault_point, spawn

if TYPE_CHECKING:
    from daq.context import ServiceContext

log = get_logger("daq.forward")

#: Rows before the cursor replayed at start so the ``dup`` tags come out as they did before.
SEED_WINDOW = 10_000
STATUS_EVERY_S = 2.0
#: How much of a quarantined line its audit entry keeps.
QUARANTINE_LINE_MAX = 2000


@dataclass(slots=True)
class Batch:
    """Lines ready to send, the ids they carry, and rows that could not be formatted."""

    first_id: int
    last_id: int
    lines: list[str] = field(default_factory=list)
    #: The request body for all of ``lines`` (gzip-compressed when the sink says so).
    body: bytes = b""
    ids: list[int] = field(default_factory=list)
    unformattable: list[tuple[int, str]] = field(default_factory=list)
    oldest_acq_ns: int = 0


class _DrainEnded(Exception):
    """A write failed during the final drain at stop: the rest waits in the journal."""


def _retry_after_s(value: str | None, now_s: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now_s)
    return None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return str(json.loads(body)["message"])[:500]
        return body.strip()[:500]
    return str(getattr(exc, "reason", "") or exc)[:500]


def _describe(exc: BaseException, timeout_s: float) -> str:
    """A transport error as one line that says what happened (a bare ``TimeoutError`` has no
    text of its own)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s (timeout)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _safe_url(url: str) -> str:
    """The URL without any user:password part (never log a secret)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


class InfluxForwarder:
    """A daemon service forwarding committed readings to one InfluxDB v2 write endpoint."""

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
        self.token = token
        self.rng = rng or random.Random()
        self.formatter = LineFormatter(
            site=site, cell=cell, kinds=kinds, resolution_ns=RESOLUTION_NS[sink.precision]
        )
        self.cursor = 0
        self.points_written = 0
        self.requests = 0
        self.quarantined = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.alarm: str | None = None
        self.state = "stopped"
        self.oldest_pending_ns: int | None = None
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._client: Any = None
        self._write_api: Any = None
        self._encoding: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_since: float | None = None
        self._kind_cache: dict[str, str | None] = {}
        self._status_path = status_file(journal.data_dir, sink.name)
        self._last_log = 0.0
        self._in_outage = False
        #: Set by stop(): the final drain runs; then set when its time is over.
        self._draining = False
        self._drain_over = False
        #: A line this server accepted (see :func:`daq.forward.policy.settle`).
        self._witness: str | None = None
        self._fault_delay = sink.backoff_initial_s

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open a read-only view of the journal, read the cursor, connect the client, run."""
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{self.sink.name}")
        loop = asyncio.get_running_loop()
        self.cursor = await self.journal.get_cursor(self.sink.name)
        # Register the sink in the outbox before its first write: retention never prunes
        # readings past the lowest cursor, and a sink that has sent nothing yet holds at 0.
        await self.journal.set_cursor(self.sink.name, self.cursor)
        self._conn = await loop.run_in_executor(self._executor, self._open_sync)
        kwargs: dict[str, Any] = {}
        if self.sink.url.startswith("https://"):
            ctx = ssl.create_default_context(cafile=str(self.sink.ca_file) if self.sink.ca_file else None)
            if not self.sink.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["ssl_context"] = ctx
        self._client = InfluxDBClientAsync(
            url=self.sink.url,
            token=self.token or "",
            org=self.sink.org,
            timeout=int(self.sink.timeout_s * 1000),
            # The client would gzip at level 9 (about 12 us per point); the forwarder compresses
            # at level 1 itself, on its reader thread, and sets Content-Encoding.
            enable_gzip=False,
            verify_ssl=self.sink.verify_tls,
            **kwargs,
        )
        from influxdb_client.service.write_service import WriteService

        self._write_api = WriteService(self._client.api_client)  # type: ignore[no-untyped-call]
        self._encoding = {"content_encoding": "gzip"} if self.sink.gzip else {}
        self.journal.on_commit(self._on_commit)
        self.state = "idle"
        log.info(
            "sink started",
            sink=self.sink.name,
            url=_safe_url(self.sink.url),
            bucket=self.sink.bucket,
            cursor=self.cursor,
            backlog=self.pending,
        )
        self._tasks = [
            spawn(self.tasks, self.component, "forwarder", self._run, ended=lambda: self._draining),
            spawn(self.tasks, f"{self.component}:status", "forwarder", self._report),
        ]

    async def stop(self, drain_s: float | None = None) -> None:
        """Stop sending, after a final drain of what is committed.

        For up to ``drain_s`` (at most the sink's ``drain_on_stop_s``) the forwarder keeps
        sending without waiting for full batches. It ends itself between requests: a request
        on the wire is never cancelled (it ends within the sink's ``timeout_s``), so the
        server never stores a batch whose acknowledgement was lost. The drain ends early when
        a write fails (no retries while stopping). What was not acknowledged stays in the
        journal for next time; it is logged and audited (``sink_drain_incomplete``) with counts.
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
            self._draining = True
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
        if self._client is not None:
            await self._client.close()
            self._client = None
        loop = asyncio.get_running_loop()
        self.state = "stopped"
        if self._executor is not None:
            with contextlib.suppress(OSError):
                await loop.run_in_executor(self._executor, self._write_status_sync, self.status())
            if self._conn is not None:
                await loop.run_in_executor(self._executor, self._conn.close)
                self._conn = None
            self._executor.shutdown(wait=True)
            self._executor = None
        self.state = "stopped"
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

    async def _pause(self, seconds: float) -> None:
        """Wait before a retry; while stopping, end the final drain instead."""
        if self._draining:
            raise _DrainEnded
        await self.clock.sleep(seconds)

    def _open_sync(self) -> sqlite3.Connection:
        self._conn = connect(self.journal.path, read_only=True)
        self._reseed_sync()
        return self._conn

    def _reseed_sync(self) -> None:
        """Rebuild the formatter's collision state from the rows just before the cursor, so
        the lines of the rows after it come out as they would have before a restart."""
        assert self._conn is not None
        f = self.formatter
        self.formatter = LineFormatter(
            site=f.site,
            cell=f.cell,
            kinds=f.kinds,
            default_kind=f.default_kind,
            resolution_ns=f.resolution_ns,
        )
        seed = self._conn.execute(
            f"{ROW_SELECT} WHERE id > ? AND id <= ? ORDER BY id",
            (max(0, self.cursor - SEED_WINDOW), self.cursor),
        ).fetchall()
        self.formatter.observe_all(seed)

    def _on_commit(self, readings: list[Any]) -> None:
        self._wake.set()

    # -- figures ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Committed readings not yet acknowledged by the sink."""
        return max(0, self.journal.last_reading_id - self.cursor)

    def points_per_s(self) -> float:
        now = time.monotonic()
        while self._rate and now - self._rate[0][0] > 10.0:
            self._rate.popleft()
        if not self._rate:
            return 0.0
        span = max(1.0, now - self._rate[0][0])
        return sum(n for _, n in self._rate) / span

    def status(self) -> dict[str, Any]:
        """Per-sink figures for ``daq status`` and the daemon's live status."""
        oldest = self.oldest_pending_ns if self.pending else None
        return {
            "kind": self.sink.kind,
            "url": _safe_url(self.sink.url),
            "bucket": self.sink.bucket,
            "state": self.state,
            "forwarded_through_id": self.cursor,
            "pending": self.pending,
            "oldest_pending_age_s": None
            if oldest is None
            else max(0.0, (self.clock.time_ns() - oldest) / 1e9),
            "points_written": self.points_written,
            "points_per_s": round(self.points_per_s(), 1),
            "requests": self.requests,
            "retries": self.retries,
            "quarantined": self.quarantined,
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "alarm": self.alarm,
            "updated_ns": self.clock.time_ns(),
        }

    def _write_status_sync(self, status: dict[str, Any]) -> None:
        write_status_file(self._status_path, status)

    def _oldest_pending_sync(self, cursor: int) -> int | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT acq_ns FROM readings WHERE id > ? ORDER BY id LIMIT 1", (cursor,)
        ).fetchone()
        return None if row is None else int(row[0])

    async def _report(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            assert self._executor is not None
            try:
                self.oldest_pending_ns = await loop.run_in_executor(
                    self._executor, self._oldest_pending_sync, self.cursor
                )
                await loop.run_in_executor(self._executor, self._write_status_sync, self.status())
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

    # -- reading the journal -----------------------------------------------------------------

    def _measurement_kind(self, instrument: str) -> None:
        """Learn the kind of an instrument no longer in the config from its last start event."""
        assert self._conn is not None
        kind: str | None = None
        row = self._conn.execute(
            "SELECT detail FROM events WHERE instrument = ? AND kind = 'started' ORDER BY id DESC LIMIT 1",
            (instrument,),
        ).fetchone()
        if row is not None and row[0]:
            with contextlib.suppress(ValueError, TypeError):
                kind = json.loads(row[0]).get("kind")
        self._kind_cache[instrument] = kind
        if kind:
            self.formatter.kinds[instrument] = kind

    def _fetch_sync(self, after_id: int) -> Batch | None:
        assert self._conn is not None
        rows: list[Row] = self._conn.execute(
            f"{ROW_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, self.sink.batch_size)
        ).fetchall()
        if not rows:
            return None
        batch = Batch(
            first_id=rows[0][LINE_ID], last_id=rows[-1][LINE_ID], oldest_acq_ns=rows[0][LINE_ACQ_NS]
        )
        kinds = self.formatter.kinds
        fmt = self.formatter.format
        lines, ids = batch.lines, batch.ids
        for row in rows:
            instrument = row[LINE_INSTRUMENT]
            if instrument not in kinds and instrument not in self._kind_cache:
                self._measurement_kind(instrument)
            try:
                lines.append(fmt(row))
            except LineProtocolError as exc:
                batch.unformattable.append((row[LINE_ID], str(exc)))
                continue
            ids.append(row[LINE_ID])
        if lines:
            batch.body = self._encode(lines)
        return batch

    async def _fetch(self, after_id: int) -> Batch | None:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._fetch_sync, after_id)

    async def _wait_for_batch(self) -> None:
        """Return once a full batch is committed, or the first pending one is ``max_age_s`` old."""
        while True:
            pending = self.pending
            if pending >= self.sink.batch_size or self._draining:
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

    # -- sending ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._forward()
                return  # the final drain is over
            except _DrainEnded:
                return
            except (sqlite3.Error, JournalError, OSError) as exc:
                # The journal could not be read or the cursor not written: the batches in
                # hand are dropped and read again (their lines come out the same, see
                # _reseed_sync); nothing is skipped.
                self._note_error(f"journal: {exc}")
                log.error("sink cannot use the journal; retrying", sink=self.sink.name, error=str(exc))
                await self._pause(self.sink.backoff_cap_s)
                assert self._executor is not None
                with contextlib.suppress(sqlite3.Error, OSError):
                    await asyncio.get_running_loop().run_in_executor(self._executor, self._reseed_sync)

    async def _forward(self) -> None:
        prefetch: asyncio.Task[Batch | None] | None = None
        try:
            while True:
                if self._draining and (self._drain_over or not self.pending):
                    return  # between requests: nothing is cut off
                if prefetch is None:
                    await self._wait_for_batch()
                    batch = await self._fetch(self.cursor)
                else:
                    batch = await prefetch
                    prefetch = None
                self._pending_since = None
                if batch is None:
                    continue
                if self.journal.last_reading_id - batch.last_id >= self.sink.batch_size:
                    # A backlog: read and format the next batch while this one is on the wire.
                    prefetch = asyncio.create_task(
                        self._fetch(batch.last_id), name=f"forward-read:{self.sink.name}"
                    )
                self.oldest_pending_ns = batch.oldest_acq_ns
                if not await self._deliver(batch):
                    # Read the batch again: the backlog behind it may show which point is poison.
                    if prefetch is not None:
                        prefetch.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await prefetch
                        prefetch = None
                    continue
                await self.journal.set_cursor(self.sink.name, batch.last_id)
                self.cursor = batch.last_id
                # What a store outside holds is anchored in the journal too (throttled).
                self.journal.anchors.anchor(f"sink:{self.sink.name}", min_interval_s=SINK_ANCHOR_EVERY_S)
                self.state = "idle"
                fault_point(self.component)
        finally:
            if prefetch is not None:
                prefetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await prefetch

    async def _deliver(self, batch: Batch) -> bool:
        """Write every line of ``batch``, quarantining only points shown to be poison (see
        :mod:`daq.forward.policy`). ``False``: the server refuses points not shown to be at
        fault; nothing was quarantined, the sink is in alarm and the batch must be retried."""

        async def send(lines: Sequence[str]) -> Accepted | Rejected:
            return await self._send(lines, batch.body if lines is batch.lines else None)

        result = await settle(batch.lines, send, self._witness)
        self._witness = result.witness
        if result.fault is not None:
            fault = result.fault
            self._raise_alarm(
                fault.status,
                f"points refused although not shown to be at fault (server fault): {fault.message}",
            )
            self.retries += 1
            await self._pause(self._fault_delay * (1.0 + 0.2 * (self.rng.random() - 0.5)))
            self._fault_delay = min(self.sink.backoff_cap_s, self._fault_delay * 2)
            return False
        self._fault_delay = self.sink.backoff_initial_s
        if result.accepted:
            self._acknowledged(result.accepted)
        for index, refusal in result.poison:
            line = batch.lines[index]
            # The reading itself stays in the journal; the audit keeps enough of the line to see why.
            detail = {
                "status": refusal.status,
                "error": refusal.message,
                "line": line[:QUARANTINE_LINE_MAX],
                "line_length": len(line),
            }
            self._quarantine(batch.ids[index], detail)
        for rid, message in batch.unformattable:
            self._quarantine(rid, {"status": None, "error": message, "line": None})
        if result.poison or batch.unformattable:
            # The audit entries must be durable before the cursor passes these readings.
            await self.journal.flush()
        return True

    def _quarantine(self, reading_id: int, detail: dict[str, Any]) -> None:
        self.quarantined += 1
        self.journal.audit(
            "sink_quarantine",
            subject=self.sink.name,
            detail={"reading_id": reading_id, **detail},
        )
        log.warning("point quarantined", sink=self.sink.name, reading_id=reading_id, error=detail["error"])

    def _raise_alarm(self, status: int, message: str) -> None:
        self._note_error(f"HTTP {status}: {message}")
        self.state = "alarm"
        if self.alarm is None:
            self.alarm = f"HTTP {status}: {message}"
            self.journal.audit(
                "sink_alarm", subject=self.sink.name, detail={"status": status, "error": message}
            )
            log.error(
                "sink alarm: writes refused; retrying at the backoff cap",
                sink=self.sink.name,
                status=status,
                error=message,
                retry_every_s=self.sink.backoff_cap_s,
            )

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_ns = self.clock.time_ns()

    def _encode(self, lines: Sequence[str]) -> bytes:
        body = "\n".join(lines).encode("utf-8")
        return gzip.compress(body, compresslevel=1) if self.sink.gzip else body

    async def _post(self, body: bytes) -> Outcome:
        """One write request, its answer classified by :func:`daq.forward.policy.classify`."""
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        self.requests += 1
        try:
            await self._write_api.post_write_async(
                org=self.sink.org,
                bucket=self.sink.bucket,
                body=body,
                precision=WritePrecision.NS,
                content_type="text/plain; charset=utf-8",
                async_req=False,
                _return_http_data_only=False,
                **self._encoding,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            after = _retry_after_s(getattr(exc, "retry_after", None), self.clock.time_ns() / 1e9)
            return classify(status, _message(exc), after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(_describe(exc, self.sink.timeout_s))
        return Accepted()

    async def _send(self, lines: Sequence[str], body: bytes | None = None) -> Accepted | Rejected:
        """POST ``lines`` until the server accepts or refuses them, backing off meanwhile."""
        if body is None:
            body = self._encode(lines)
        delay = self.sink.backoff_initial_s
        while True:
            self.state = "sending" if self.alarm is None and not self._in_outage else self.state
            outcome = await self._post(body)
            if isinstance(outcome, Accepted):
                self._reachable()
                return outcome
            if isinstance(outcome, Rejected):
                return outcome
            wait, jittered = delay, True
            if outcome.alarm:
                assert outcome.status is not None
                self._raise_alarm(outcome.status, outcome.message.partition(": ")[2])
                wait, jittered = self.sink.backoff_cap_s, False
            else:
                if outcome.after_s is not None:
                    wait, jittered = min(outcome.after_s, self.sink.retry_after_max_s), False
                self._outage(outcome.message)
            self.retries += 1
            if jittered:
                # +-10 %: forwarders of many lines restarting together do not retry in step.
                wait *= 1.0 + 0.2 * (self.rng.random() - 0.5)
            await self._pause(wait)
            delay = min(self.sink.backoff_cap_s, delay * 2)

    def _outage(self, message: str) -> None:
        self._note_error(message)
        if self.alarm is None:
            self.state = "retrying"
        if not self._in_outage:
            self._in_outage = True
            log.warning("sink unreachable; backlog waits in the journal", sink=self.sink.name, error=message)

    def _acknowledged(self, n: int) -> None:
        self.points_written += n
        self._rate.append((time.monotonic(), n))

    def _reachable(self) -> None:
        """The server accepted a write: an outage or an alarm is over."""
        if self._in_outage:
            self._in_outage = False
            log.info("sink reachable again", sink=self.sink.name, pending=self.pending)
        if self.alarm is not None:
            self.journal.audit("sink_alarm_cleared", subject=self.sink.name, detail={"alarm": self.alarm})
            log.info("sink alarm cleared", sink=self.sink.name)
            self.alarm = None
        self.state = "sending"


def sink_token(sink: InfluxSink, index: int) -> str | None:
    """The sink's token from its credential or environment variable (``None`` if it has none)."""
    if not sink.token_env and not sink.token_credential:
        return None
    return resolve_secret(sink.token_env, sink.token_credential, f"sinks[{index}] ({sink.name}) token")


class ForwardService:
    """The daemon service running one :class:`InfluxForwarder` per enabled sink."""

    name = "forward"
    phase = 1
    #: The daemon stops this service after the supervisors' last readings are committed, so
    #: the final drain (:meth:`InfluxForwarder.stop`) sends them.
    drains_on_stop = True

    def __init__(self, forwarders: list[InfluxForwarder]):
        self.forwarders = forwarders

    async def start(self) -> None:
        started: list[InfluxForwarder] = []
        try:
            for fwd in self.forwarders:
                await fwd.start()
                started.append(fwd)
        except BaseException:
            for fwd in reversed(started):
                await fwd.stop()
            raise

    async def stop(self, drain_s: float | None = None) -> None:
        """Stop every forwarder; their final drains run side by side within ``drain_s``."""
        await asyncio.gather(*(fwd.stop(drain_s) for fwd in self.forwarders))

    def status(self) -> dict[str, Any]:
        return {"sinks": {fwd.sink.name: fwd.status() for fwd in self.forwarders}}


def service(ctx: ServiceContext) -> ForwardService | None:
    """The daemon's service factory: ``None`` without enabled sinks. Raises ConfigError when
    a sink's token cannot be found (before anything starts)."""
    cfg = ctx.config
    sinks = [(i, s) for i, s in enumerate(getattr(cfg.model, "sinks", [])) if s.enabled]
    if not sinks:
        return None
    kinds = {inst.name: inst.kind for inst in cfg.instruments}
    forwarders = [
        InfluxForwarder(
            sink,
            ctx.journal,
            site=cfg.daemon.site,
            cell=cfg.daemon.cell,
            kinds=kinds,
            clock=ctx.clock,
            token=sink_token(sink, i),
            rng=ctx.rng,
            tasks=ctx.tasks,
        )
        for i, sink in sinks
    ]
    return ForwardService(forwarders)
