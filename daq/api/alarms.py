"""The alarm routes of the local API: ``GET /api/alarms``, ``POST /api/alarms/{id}/ack`` and
the live alarm stream ``GET /api/alarms/stream`` (the JSON shapes are in docs/local-api.md).

The stream is NDJSON and a client of the journal's live feed of ``alarm_events`` rows
(:meth:`~daq.journal.journal.Journal.record_feed`), the same fan-out as the readings' stream
(:mod:`daq.api.live`): a transition is sent once the group commit that stored its row has
returned, as :func:`daq.alarms.store.transition_of` reads it from that row, with the row's id
as ``event_id``. First the alarms not in normal (``"kind": "active"``) and a ``live`` notice
with ``last_id``, the last ``alarm_events`` id they include; then each transition committed
after it; ``{"type": "heartbeat"}`` when there is nothing to send.

``since_id`` (an ``event_id`` the client got, or a notice's ``last_id``) resumes: the
transitions committed after it are read from the journal in place of the snapshot (the alarms
as they are now come instead, after a notice, if it is more than ``replay_limit`` behind or
past this journal's last id). A client that falls ``client_queue`` transitions behind gets a
``gap`` line and the transitions it missed from the journal, in order, then live ones again;
one whose socket accepts nothing for ``client_write_timeout_s`` is disconnected (and counted).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from daq.alarms.store import TABLE, rows_between, transition_of
from daq.api.auth import BearerAuth
from daq.api.config import ApiSection
from daq.api.control import _body
from daq.api.guard import dumps_json, int_param, json_error
from daq.api.live import REPLAY_CHUNK, LiveClients, LiveSession, gap_line, notice_line, small_send_buffer
from daq.context import AlarmControl
from daq.errors import DaqError
from daq.journal.feed import RecordBatch
from daq.journal.journal import JOURNAL_FILE, Journal
from daq.journal.schema import CHAINED

#: (required, optional) fields of an acknowledgement's body; ``actor`` comes with it.
ACK_FIELDS: tuple[set[str], set[str]] = ({"comment"}, set())

_COLUMNS = CHAINED[TABLE]


def alarm_clients(journal: Journal) -> LiveClients[RecordBatch]:
    """The clients of the live alarm stream: subscriptions of the journal's ``alarm_events`` feed."""
    return LiveClients(journal.record_feed(TABLE))


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class AlarmRoutesParts(Protocol):
    """What the alarm routes use of the service: the token check, the journal, the alarms,
    the stream's clients and timings."""

    auth: BearerAuth | None
    journal: Journal
    alarm_clients: LiveClients[RecordBatch]
    settings: ApiSection

    def alarm_control(self) -> AlarmControl: ...


async def serve_alarm_stream(
    request: web.Request,
    *,
    clients: LiveClients[RecordBatch],
    alarms: AlarmControl,
    journal: Journal,
    settings: ApiSection,
    since_id: int | None,
) -> web.StreamResponse:
    """Stream alarm transitions to one client until it goes away, is dropped, or the server
    stops (see the module's docstring)."""
    sub = clients.connect(settings.client_queue, str(request.remote), request.transport, "alarm stream")
    # In the same step as subscribing (no await between): every row committed after last_id
    # reaches the subscription, and the snapshot already shows what was committed before.
    sent_id = journal.committed_heads().get(TABLE, (0, b""))[0]
    snapshot = alarms.snapshot()
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    live = LiveSession(
        clients, sub, resp, Path(journal.data_dir) / JOURNAL_FILE, settings.client_write_timeout_s
    )
    write = live.write

    async def from_journal(after_id: int, last_id: int) -> None:
        """Send the transitions of ``after_id < id <= last_id`` from the journal, a chunk at a time."""
        db = await live.journal()
        while after_id < last_id:
            rows = await live.in_thread(
                functools.partial(rows_between, db, after_id, last_id, limit=REPLAY_CHUNK)
            )
            if not rows:
                break
            await write(b"".join(_line(transition_of(row)) for row in rows))
            after_id = rows[-1]["id"]

    async def send(batch: RecordBatch, sent_id: int) -> None:
        first = batch.first_id
        lines = [
            _line(transition_of(dict(zip(_COLUMNS, row, strict=True))))
            for i, row in enumerate(batch.rows)
            if first + i > sent_id
        ]
        await write(b"".join(lines))

    async with live:
        small_send_buffer(request)
        await resp.prepare(request)
        replay = since_id is not None and since_id <= sent_id and sent_id - since_id <= settings.replay_limit
        if since_id is not None and not replay:
            why = (
                f"since_id {since_id} is past this journal's last alarm event {sent_id}"
                if since_id > sent_id
                else f"more than {settings.replay_limit} alarm events since since_id {since_id}"
            )
            await write(notice_line(f"{why}: the alarms as they are now follow", False))
        if replay:
            assert since_id is not None
            await from_journal(since_id, sent_id)
        elif snapshot:
            await write(b"".join(_line(event) for event in snapshot))
        await write(notice_line("live", False, last_id=sent_id))
        await live.follow(
            sent_id,
            heartbeat_s=settings.heartbeat_s,
            heartbeat=b'{"type":"heartbeat"}\n',
            gap=lambda g: gap_line(g, False, "alarm transitions"),
            from_journal=from_journal,
            send=send,
        )
    return resp


def add_alarm_routes(routes: web.RouteTableDef, svc: AlarmRoutesParts) -> None:
    """Add the alarm routes to ``routes``."""

    @routes.get("/api/alarms")
    async def list_alarms(request: web.Request) -> web.Response:
        return web.json_response(svc.alarm_control().listing(), dumps=dumps_json)

    @routes.get("/api/alarms/stream")
    async def alarm_stream(request: web.Request) -> web.StreamResponse:
        text = request.query.get("since_id")
        since_id = (
            None
            if text is None
            else int_param("since_id", text, 0, 2**63 - 1, "an alarm event id (0 or more)")
        )
        return await serve_alarm_stream(
            request,
            clients=svc.alarm_clients,
            alarms=svc.alarm_control(),
            journal=svc.journal,
            settings=svc.settings,
            since_id=since_id,
        )

    @routes.post("/api/alarms/{alarm_id}/ack")
    async def acknowledge(request: web.Request) -> web.Response:
        assert svc.auth is not None
        svc.auth.check(request)
        alarms = svc.alarm_control()
        body, actor = await _body(request, ACK_FIELDS)
        comment = body["comment"]
        if not isinstance(comment, str) or not comment.strip():
            raise json_error(web.HTTPBadRequest, "comment: expected a non-empty string")
        if len(comment) > 2000:
            raise json_error(web.HTTPBadRequest, "comment: at most 2000 characters")
        alarm_id = request.match_info["alarm_id"]
        try:
            result = alarms.acknowledge(alarm_id, actor=actor, comment=comment)
        except DaqError as exc:
            raise json_error(web.HTTPNotFound, str(exc)) from None
        return web.json_response(result, dumps=dumps_json)


__all__ = ["ACK_FIELDS", "add_alarm_routes", "alarm_clients", "serve_alarm_stream"]
