"""The local API's aiohttp application (served by :class:`daq.api.server.ApiService`).

Endpoints (JSON unless stated):

==============================  ==============================================================
``GET /``                       the live page (static files shipped in this package)
``GET /healthz``                200 while the journal commits, 503 with the reasons otherwise
``GET /metrics``                Prometheus text format
``GET /api/status``             instruments (state, last value per channel and its age,
                                reconnects), the journal (size, commits), sinks (backlog, last
                                error), the active run, alarms, each service's status
``GET /api/readings``           readings from the journal: ``since`` (``5m``) or ``since_ns``
                                (the newest ``limit``), or ``since_id`` (a journal id: the
                                oldest ``limit`` after it; ``last_id`` continues), ``instrument``,
                                ``channel`` (glob), ``quality``
``GET /api/stream``             live readings, NDJSON or server-sent events (``format=sse`` or
                                ``Accept: text/event-stream``), same filters; ``since`` /
                                ``since_ns`` replay the journal first; ``since_id`` (a journal
                                id, every reading carries its ``id``) resumes exactly after it
``GET /api/runs``               runs (``/api/runs/active``, ``/api/runs/{run_id}``)
``POST /api/runs``              start a run; ``.../active/stop``, ``.../active/annotations``,
                                ``.../active/t0``: need ``Authorization: Bearer <token>`` and an
                                actor (``X-Actor`` header or ``"actor"`` in the JSON body)
==============================  ==============================================================

The run routes are added by :mod:`daq.api.control`; every request first passes the Host and
Origin check of :mod:`daq.api.guard`, and the body size limit is set here. Status, health and
alarms come from :mod:`daq.status`, never from the supervisors directly.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from daq.api import guard, metrics
from daq.api.alarms import add_alarm_routes
from daq.api.auth import BearerAuth
from daq.api.config import ApiSection
from daq.api.control import add_run_routes
from daq.api.filters import ReadingFilter, parse_duration
from daq.api.guard import dumps_json, json_error
from daq.api.live import LiveClients
from daq.api.stream import query_journal, records_json, serve_stream
from daq.context import AlarmControl, RunControl
from daq.journal.feed import FeedBatch, RecordBatch
from daq.journal.journal import Journal
from daq.status import StatusBoard
from daq.timeparse import MAX_NS, MIN_NS

if TYPE_CHECKING:
    from daq.runs.signatures import RunConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"


class ApiParts(Protocol):
    """What the application's handlers use of the service that serves it."""

    settings: ApiSection
    journal: Journal
    board: StatusBoard
    live: LiveClients[FeedBatch]
    counters: metrics.CommitCounters
    lag: metrics.LagSampler
    auth: BearerAuth | None
    alarms: AlarmControl | None
    alarm_clients: LiveClients[RecordBatch]
    run_config: RunConfig

    def now_ns(self) -> int: ...

    def run_control(self) -> RunControl: ...

    def alarm_control(self) -> AlarmControl: ...


def _query_filter(request: web.Request) -> ReadingFilter:
    q = request.query
    try:
        return ReadingFilter.from_params(
            q.getall("instrument", []), q.getall("channel", []), q.getall("quality", [])
        )
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from None


def _query_since(request: web.Request, now_ns: int, default: str | None) -> int | None:
    """``since_ns`` (UTC ns, 1970 to 2200) or ``since`` (a duration ago), range-checked."""
    q = request.query
    if "since_ns" in q:
        return guard.int_param("since_ns", q["since_ns"], MIN_NS, MAX_NS, "ns since the epoch (1970 to 2200)")
    text = q.get("since", default)
    if text is None:
        return None
    try:
        since = now_ns - round(parse_duration(text) * 1e9)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"since: {exc}") from None
    if since < MIN_NS:
        raise json_error(web.HTTPBadRequest, f"since: {text!r} reaches back before 1970")
    return since


def _query_since_id(request: web.Request, *, last_event_id: bool = False) -> int | None:
    """``since_id``: the journal id of the last reading a client saw (0 for all); for the
    stream, a browser's ``Last-Event-ID`` header (sent when an ``EventSource`` reconnects)
    stands for it when the query has none."""
    text = request.query.get("since_id")
    name = "since_id"
    if text is None and last_event_id:
        text, name = request.headers.get("Last-Event-ID"), "Last-Event-ID"
    if text is None:
        return None
    return guard.int_param(name, text, 0, 2**63 - 1, "a journal id (0 or more)")


def make_app(parts: ApiParts) -> web.Application:
    """The aiohttp application over ``parts`` (the :class:`~daq.api.server.ApiService`)."""
    svc = parts
    settings = svc.settings
    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        ok, problems = svc.board.health()
        failures = svc.board.task_failures()
        return web.json_response(
            {"ok": ok, "problems": problems, "task_failures": failures, "journal": svc.journal.health()},
            status=200 if ok else 503,
        )

    @routes.get("/metrics")
    async def metrics_page(request: web.Request) -> web.Response:
        board = svc.board
        now = svc.now_ns()
        text = metrics.render(
            board.instruments(now),
            board.tasks.status(),
            board.journal,
            svc.counters,
            svc.lag,
            svc.live,
            board.sinks(),
            now,
            svc.alarms.counts() if svc.alarms is not None else None,
        )
        return web.Response(
            text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"}
        )

    @routes.get("/api/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(svc.board.live(), dumps=dumps_json)

    @routes.get("/api/readings")
    async def readings(request: web.Request) -> web.Response:
        now = svc.now_ns()
        flt = _query_filter(request)
        # since_id pages forward by journal id (the oldest readings after it first); without
        # it, the newest readings acquired since ``since`` (5 minutes by default).
        since_id = _query_since_id(request)
        since = None if since_id is not None else _query_since(request, now, "5m")
        # limit: at least 1 (0 or a negative number is refused, not read as "all"); more than
        # replay_limit is cut to replay_limit.
        asked = request.query.get("limit", "10000")
        limit = guard.int_param("limit", asked, 1, 2**63 - 1, "a number of readings")
        limit = min(limit, settings.replay_limit)
        answer = await asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                query_journal, svc.journal.data_dir, flt=flt, scan_limit=settings.replay_limit,
                since_ns=since or 0, since_id=since_id, limit=limit,
            ),
        )  # fmt: skip
        body = b'{"readings":[' + b",".join(records_json(answer.records)) + b'],"truncated":'
        body += b"true" if answer.truncated else b"false"
        body += b',"last_id":%d}' % answer.last_id
        return web.Response(body=body, content_type="application/json")

    @routes.get("/api/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        now = svc.now_ns()
        flt = _query_filter(request)
        since = _query_since(request, now, None)
        since_id = _query_since_id(request, last_event_id=True)
        fmt = request.query.get("format")
        if fmt not in (None, "sse", "ndjson"):
            raise json_error(web.HTTPBadRequest, "format: expected sse or ndjson")
        sse = fmt == "sse" or (fmt is None and "text/event-stream" in request.headers.get("Accept", ""))
        return await serve_stream(
            request,
            clients=svc.live,
            data_dir=svc.journal.data_dir,
            flt=flt,
            since_ns=since,
            sse=sse,
            max_pending=settings.client_queue,
            write_timeout_s=settings.client_write_timeout_s,
            heartbeat_s=settings.heartbeat_s,
            replay_limit=settings.replay_limit,
            now_ns=now,
            since_id=since_id,
        )

    add_run_routes(routes, parts)
    add_alarm_routes(routes, parts)

    hosts = guard.HostPolicy(settings.listen, settings.allowed_hosts)
    app = web.Application(middlewares=[hosts.middleware()], client_max_size=settings.max_body_bytes)
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC_DIR)
    return app
