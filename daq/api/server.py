"""The local API: an aiohttp application served by the daemon service ``"api"`` (phase 1).

Endpoints (JSON unless stated):

==============================  ==============================================================
``GET /``                       the live page (static files shipped in this package)
``GET /healthz``                200 while the journal commits, 503 with the reasons otherwise
``GET /metrics``                Prometheus text format
``GET /api/status``             instruments (state, last value per channel and its age,
                                reconnects), the journal (size, commits), sinks (backlog, last
                                error), the active run, alarms, each service's status
``GET /api/readings``           readings from the journal: ``since`` (``5m``) or ``since_ns``,
                                ``instrument``, ``channel`` (glob), ``quality``, ``limit``
``GET /api/stream``             live readings, NDJSON or server-sent events (``format=sse`` or
                                ``Accept: text/event-stream``), same filters; ``since`` /
                                ``since_ns`` replay the journal first
``GET /api/runs``               runs (``/api/runs/active``, ``/api/runs/{run_id}``)
``POST /api/runs``              start a run; ``.../active/stop``, ``.../active/annotations``,
                                ``.../active/t0``: need ``Authorization: Bearer <token>`` and an
                                actor (``X-Actor`` header or ``"actor"`` in the JSON body)
==============================  ==============================================================

The API never blocks acquisition: journal queries run on worker threads with their own
read-only connections, live clients have bounded queues (:mod:`daq.api.stream`), and if the
port cannot be bound the daemon keeps acquiring while the service retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daq.api import guard, metrics
from daq.api.auth import BearerAuth
from daq.api.config import ApiSection
from daq.api.filters import ReadingFilter, parse_duration
from daq.api.listener import Listener, listening_socket
from daq.api.stream import StreamHub, query_journal, row_json, serve_stream
from daq.context import RunControl
from daq.errors import DaqError
from daq.logs import get_logger
from daq.model import Reading
from daq.status import StatusBoard
from daq.supervision import fault_point, spawn
from daq.timeparse import MAX_NS, MIN_NS

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.context import ServiceContext
    from daq.journal.journal import Journal
    from daq.supervision import TaskTree

log = get_logger("daq.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Seconds between attempts to bind the port when it is taken.
BIND_RETRY_S = 5.0
#: Seconds between checks of the accept loop by the supervised ``api`` task.
SERVE_CHECK_S = 1.0
#: Longest request line or header line, and most header lines, a request may have.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 64

_dumps = functools.partial(json.dumps, default=str)

START_FIELDS = ({"batch", "product", "nuclide", "operator"}, {"method", "reason"})
STOP_FIELDS: tuple[set[str], set[str]] = (set(), {"reason"})
ANNOTATE_FIELDS = ({"text", "reason"}, {"instrument"})
T0_FIELDS = ({"reason"}, {"instrument", "ts_ns"})


def _json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=_dumps({"error": message}), content_type="application/json")


def _guarded(hook: Callable[[list[Reading]], None], what: str) -> Callable[[list[Reading]], None]:
    """A commit hook runs inside the journal's writer task: whatever goes wrong in the view
    must not reach the record of origin."""
    failed = False

    def call(readings: list[Reading]) -> None:
        nonlocal failed
        try:
            hook(readings)
        except Exception as exc:
            if not failed:
                log.error("api commit hook failed", hook=what, error=repr(exc))
            failed = True

    return call


class ApiService:
    """The daemon service ``"api"``: serves the application while the daemon runs."""

    name = "api"
    phase = 1

    def __init__(
        self,
        settings: ApiSection,
        *,
        clock: Clock,
        journal: Journal,
        tasks: TaskTree,
        board: StatusBoard,
        runs: RunControl | None,
    ):
        self.settings = settings
        self.clock = clock
        self.journal = journal
        self.tasks = tasks
        #: Status, health and alarms, assembled in the core (:mod:`daq.status`).
        self.board = board
        #: The run operations only: no request can reach a service's start or stop.
        self.runs = runs
        self.hub = StreamHub()
        # Registered now (services are built before the supervisors start), so the counters
        # see every reading; both hooks only append or add, never wait.
        self.counters = metrics.CommitCounters(journal)
        journal.on_commit(_guarded(self.counters, "metrics"))
        journal.on_commit(_guarded(self.hub.publish, "live stream"))
        self.lag = metrics.LagSampler()
        self.auth: BearerAuth | None = None
        self.runner: web.AppRunner | None = None
        self.listener: Listener | None = None
        self.url: str | None = None
        self.error: str | None = None
        self.started_ns = clock.time_ns()
        self._serving: asyncio.Task[None] | None = None

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.auth = BearerAuth(self.settings)
        if not self.auth.enabled and (self.settings.token_env or self.settings.token_credential):
            log.error("api run control disabled", reason=self.auth.disabled_reason)
        s = self.settings
        self.runner = web.AppRunner(
            make_app(self),
            access_log=None,
            shutdown_timeout=2.0,
            # Runs from the accept and between requests: idle connections are closed.
            keepalive_timeout=s.idle_timeout_s,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADERS,
        )
        await self.runner.setup()
        self.lag.start()
        await self._bind()
        self._serving = spawn(self.tasks, "api", "api", self._serve)

    async def _bind(self) -> bool:
        assert self.runner is not None
        assert self.runner.server is not None
        try:
            sock = listening_socket(self.settings.listen, self.settings.port)
        except OSError as exc:
            first = self.error is None
            self.error = (
                f"cannot listen on {self.settings.listen}:{self.settings.port}: {exc.strerror or exc}"
            )
            if first:
                # Acquisition goes on without the API; keep trying, say it once.
                log.error("api not serving; retrying", error=self.error, every_s=BIND_RETRY_S)
            return False
        self.listener = Listener(
            self.runner.server,
            sock,
            max_connections=self.settings.max_connections,
            header_timeout_s=self.settings.header_timeout_s,
        )
        self.error = None
        host = self.settings.listen
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.listener.port}"
        log.info("api listening", url=self.url)
        return True

    async def _serve(self) -> None:
        """Keep the site listening: bind while the port is taken, then watch it. Under the task
        tree: should this fail, the site is closed and the tree starts this again (a new bind)."""
        accepting: asyncio.Task[None] | None = None
        try:
            while self.listener is None and not await self._bind():
                await asyncio.sleep(BIND_RETRY_S)
            assert self.listener is not None
            accepting = asyncio.create_task(self.listener.run(), name="api-accept")
            while True:
                await asyncio.wait({accepting}, timeout=SERVE_CHECK_S)
                if accepting.done():
                    accepting.result()  # raises what ended it; a return is a failure too
                    raise RuntimeError("the api accept loop ended")
                fault_point("api")
        finally:
            if accepting is not None:
                accepting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await accepting
            listener, self.listener = self.listener, None
            self.url = None
            if listener is not None:
                listener.close()

    async def stop(self) -> None:
        self.hub.close_all()
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.lag.stop()

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "error": self.error,
            "connections": self.listener.status() if self.listener is not None else None,
            "stream_clients": len(self.hub.clients),
            "stream_dropped": self.hub.dropped_total,
            "control": "enabled" if self.auth and self.auth.enabled else "disabled",
        }

    # -- views -----------------------------------------------------------------------------

    def now_ns(self) -> int:
        return self.clock.time_ns()

    def run_control(self) -> RunControl:
        runs = self.runs
        if runs is None:
            raise _json_error(
                web.HTTPServiceUnavailable,
                "run control is not available: this daemon has no run manager (service 'runs' not running)",
            )
        return runs


def _query_filter(request: web.Request) -> ReadingFilter:
    q = request.query
    try:
        return ReadingFilter.from_params(
            q.getall("instrument", []), q.getall("channel", []), q.getall("quality", [])
        )
    except ValueError as exc:
        raise _json_error(web.HTTPBadRequest, str(exc)) from None


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
        raise _json_error(web.HTTPBadRequest, f"since: {exc}") from None
    if since < MIN_NS:
        raise _json_error(web.HTTPBadRequest, f"since: {text!r} reaches back before 1970")
    return since


async def _body(request: web.Request, fields: tuple[set[str], set[str]]) -> tuple[dict[str, Any], str]:
    """The JSON body checked against (required, optional) fields, and the actor."""
    required, optional = fields
    if request.can_read_body:
        text = await request.text()
        if not guard.json_depth_ok(text):
            raise _json_error(web.HTTPBadRequest, f"the body nests deeper than {guard.MAX_BODY_DEPTH} levels")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise _json_error(web.HTTPBadRequest, "the body must be a JSON object") from None
    else:
        body = {}
    if not isinstance(body, dict):
        raise _json_error(web.HTTPBadRequest, "the body must be a JSON object")
    actor = body.pop("actor", None) or request.headers.get("X-Actor")
    if not actor or not isinstance(actor, str):
        raise _json_error(
            web.HTTPBadRequest, 'name who does this: an X-Actor header or an "actor" field in the body'
        )
    unknown = sorted(set(body) - required - optional)
    missing = sorted(required - set(body))
    if unknown or missing:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "",
        ]
        raise _json_error(web.HTTPBadRequest, "; ".join(p for p in parts if p))
    for key, value in body.items():
        ok = (
            (isinstance(value, int) and not isinstance(value, bool))
            if key == "ts_ns"
            else isinstance(value, str)
        )
        if not ok and value is not None:
            expected = "an integer (ns since the epoch)" if key == "ts_ns" else "a string"
            raise _json_error(web.HTTPBadRequest, f"{key}: expected {expected}")
        if key == "ts_ns" and value is not None:
            guard.instant_ns(key, value)
    return body, actor


async def signing_endpoint(request: web.Request, journal: Any) -> web.Response:
    """``POST /api/runs/{run_id}/signatures`` with ``{"user_id", "password", "meaning",
    "comment"?}``: loopback peers only; a refusal is 403 (and in the audit trail)."""
    from daq.runs.signatures import SignatureRefused, sign_live
    from daq.users import UserError

    if request.remote not in ("127.0.0.1", "::1"):
        raise _json_error(web.HTTPForbidden, "signatures are accepted from this machine (loopback) only")
    text = await request.text() if request.can_read_body else ""
    try:
        body = json.loads(text) if guard.json_depth_ok(text) else None
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise _json_error(web.HTTPBadRequest, "the body must be a JSON object")
    fields = {"user_id", "password", "meaning", "comment"}
    unknown = sorted(set(body) - fields)
    missing = sorted({"user_id", "password", "meaning"} - set(body))
    if unknown or missing or not all(isinstance(v, str) for v in body.values() if v is not None):
        raise _json_error(
            web.HTTPBadRequest,
            f"expected string fields user_id, password, meaning and optionally comment "
            f"(missing {', '.join(missing) or 'none'}, unknown {', '.join(unknown) or 'none'})",
        )
    try:
        sig = await sign_live(
            journal,
            run_id=request.match_info["run_id"],
            meaning=body["meaning"],
            comment=body.get("comment"),
            user_id=body["user_id"],
            password=body["password"],
        )
    except (SignatureRefused, UserError) as exc:
        raise _json_error(web.HTTPForbidden, str(exc)) from None
    except DaqError as exc:
        raise _json_error(web.HTTPConflict, str(exc)) from None
    return web.json_response(sig, dumps=_dumps)


def make_app(svc: ApiService) -> web.Application:
    """The aiohttp application of one :class:`ApiService`."""
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
        text = metrics.render(
            board.supervisors,
            board.tasks,
            board.journal,
            svc.counters,
            svc.lag,
            svc.hub,
            board.sinks(),
            svc.now_ns(),
        )
        return web.Response(
            text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"}
        )

    @routes.get("/api/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(svc.board.live(), dumps=_dumps)

    @routes.get("/api/readings")
    async def readings(request: web.Request) -> web.Response:
        now = svc.now_ns()
        flt = _query_filter(request)
        since = _query_since(request, now, "5m")
        assert since is not None
        # limit: the newest N readings; at least 1 (0 or a negative number is refused, not
        # read as "all"); more than replay_limit is cut to replay_limit.
        asked = request.query.get("limit", "10000")
        limit = guard.int_param("limit", asked, 1, 2**63 - 1, "a number of readings")
        limit = min(limit, settings.replay_limit)
        rows, truncated = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: query_journal(
                svc.journal.data_dir, since_ns=since, flt=flt, scan_limit=settings.replay_limit
            ),
        )
        if len(rows) > limit:
            rows, truncated = rows[-limit:], True
        body = b'{"readings":[' + b",".join(row_json(r) for r in rows) + b'],"truncated":'
        body += b"true}" if truncated else b"false}"
        return web.Response(body=body, content_type="application/json")

    @routes.get("/api/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        now = svc.now_ns()
        flt = _query_filter(request)
        since = _query_since(request, now, None)
        fmt = request.query.get("format")
        if fmt not in (None, "sse", "ndjson"):
            raise _json_error(web.HTTPBadRequest, "format: expected sse or ndjson")
        sse = fmt == "sse" or (fmt is None and "text/event-stream" in request.headers.get("Accept", ""))
        return await serve_stream(
            request,
            hub=svc.hub,
            data_dir=svc.journal.data_dir,
            flt=flt,
            since_ns=since,
            sse=sse,
            max_pending=settings.client_queue,
            write_timeout_s=settings.client_write_timeout_s,
            heartbeat_s=settings.heartbeat_s,
            replay_limit=settings.replay_limit,
            now_ns=now,
        )

    @routes.get("/api/runs")
    async def list_runs(request: web.Request) -> web.Response:
        runs = svc.run_control()
        # The run manager reads the journal: off the event loop.
        listed = await asyncio.get_running_loop().run_in_executor(None, runs.list_runs)
        return web.json_response({"runs": listed, "active": runs.active()}, dumps=_dumps)

    @routes.get("/api/runs/active")
    async def active_run(request: web.Request) -> web.Response:
        runs = svc.run_control()
        return web.json_response({"active": runs.active()}, dumps=_dumps)

    @routes.get("/api/runs/{run_id}")
    async def show_run(request: web.Request) -> web.Response:
        runs = svc.run_control()
        run_id = request.match_info["run_id"]
        found = await asyncio.get_running_loop().run_in_executor(None, runs.get, run_id)
        if found is None:
            raise _json_error(web.HTTPNotFound, f"no run {run_id!r}")
        return web.json_response(found, dumps=_dumps)

    async def control(
        request: web.Request,
        fields: tuple[set[str], set[str]],
        operation: Callable[[RunControl, dict[str, Any], str], Awaitable[dict[str, Any]]],
    ) -> web.Response:
        assert svc.auth is not None
        svc.auth.check(request)
        runs = svc.run_control()
        body, actor = await _body(request, fields)
        try:
            result = await operation(runs, body, actor)
        except DaqError as exc:
            raise _json_error(web.HTTPConflict, str(exc)) from None
        except ValueError as exc:
            raise _json_error(web.HTTPBadRequest, str(exc)) from None
        return web.json_response(result, dumps=_dumps)

    # Each route names the one run operation it may call; the fields were checked by _body.
    @routes.post("/api/runs")
    async def start_run(request: web.Request) -> web.Response:
        return await control(
            request,
            START_FIELDS,
            lambda runs, b, actor: runs.open_run(
                batch=b["batch"],
                product=b["product"],
                nuclide=b["nuclide"],
                operator=b["operator"],
                method=b.get("method"),
                reason=b.get("reason"),
                actor=actor,
            ),
        )

    @routes.post("/api/runs/active/stop")
    async def stop_run(request: web.Request) -> web.Response:
        return await control(
            request, STOP_FIELDS, lambda runs, b, actor: runs.close_run(actor=actor, reason=b.get("reason"))
        )

    @routes.post("/api/runs/active/annotations")
    async def annotate(request: web.Request) -> web.Response:
        return await control(
            request,
            ANNOTATE_FIELDS,
            lambda runs, b, actor: runs.annotate(
                text=b["text"], reason=b["reason"], instrument=b.get("instrument"), actor=actor
            ),
        )

    @routes.post("/api/runs/active/t0")
    async def mark_t0(request: web.Request) -> web.Response:
        return await control(
            request,
            T0_FIELDS,
            lambda runs, b, actor: runs.mark_t0(
                reason=b["reason"], instrument=b.get("instrument"), ts_ns=b.get("ts_ns"), actor=actor
            ),
        )

    @routes.post("/api/runs/{run_id}/signatures")
    async def sign_run(request: web.Request) -> web.Response:
        # An e-signature: the API token *and* the signer's own user id and password, from this
        # machine only (see daq.runs.signatures.sign_live and docs/qc-guide.md).
        assert svc.auth is not None
        svc.auth.check(request)
        return await signing_endpoint(request, svc.journal)

    hosts = guard.HostPolicy(settings.listen, settings.allowed_hosts)
    app = web.Application(middlewares=[hosts.middleware()], client_max_size=settings.max_body_bytes)
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC_DIR)
    return app


def build_service(ctx: ServiceContext, *, runs: RunControl | None) -> ApiService | None:
    """Built by :func:`daq.services.build_services`: ``None`` when ``[api] enabled = false``."""
    settings: ApiSection = ctx.config.model.api
    if not settings.enabled:
        return None
    return ApiService(
        settings, clock=ctx.clock, journal=ctx.journal, tasks=ctx.tasks, board=ctx.status, runs=runs
    )
