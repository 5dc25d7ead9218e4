"""The local API's daemon service ``"api"`` (phase 1): binds, serves and stops the
application of :mod:`daq.api.app` (its endpoints are listed there; run control in
:mod:`daq.api.control`, status from :mod:`daq.status`).

The API never blocks acquisition: journal queries run on worker threads with their own
read-only connections, live clients read bounded subscriptions of the journal's live feed
(:mod:`daq.api.live`), and if the port cannot be bound the daemon keeps acquiring while the service retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daq.api import metrics
from daq.api.alarms import alarm_clients
from daq.api.app import STATIC_DIR, make_app
from daq.api.auth import BearerAuth
from daq.api.config import ApiSection
from daq.api.guard import json_error
from daq.api.listener import Listener, listening_socket
from daq.api.live import LiveClients
from daq.context import AlarmControl, RunControl
from daq.logs import get_logger
from daq.model import Reading
from daq.status import StatusBoard
from daq.supervision import fault_point, spawn

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.context import ServiceContext
    from daq.journal.journal import Journal
    from daq.runs.signatures import RunConfig
    from daq.supervision import TaskTree

log = get_logger("daq.api")

#: Seconds between attempts to bind the port when it is taken.
BIND_RETRY_S = 5.0
#: Seconds between checks of the accept loop by the supervised ``api`` task.
SERVE_CHECK_S = 1.0
#: Longest request line or header line, and most header lines, a request may have.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 64


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
        alarms: AlarmControl | None = None,
        run_config: RunConfig,
    ):
        self.settings = settings
        self.clock = clock
        self.journal = journal
        self.tasks = tasks
        #: Status, health and alarms, assembled in the core (:mod:`daq.status`).
        self.board = board
        #: The run operations only: no request can reach a service's start or stop.
        self.runs = runs
        #: The alarms' views and acknowledgement (``/api/alarms``).
        self.alarms = alarms
        #: The config a run was acquired with (its signing rules), from the journal's snapshots.
        self.run_config = run_config
        #: Clients of the live alarm stream, each a subscription of the journal's feed of
        #: committed ``alarm_events`` rows.
        self.alarm_clients = alarm_clients(journal)
        #: Clients of the live stream, each a subscription of the journal's live feed.
        self.live = LiveClients(journal.feed)
        # Registered now (services are built before the supervisors start), so the counters
        # see every reading; the hook only adds, never waits.
        self.counters = metrics.CommitCounters(journal)
        journal.on_commit(_guarded(self.counters, "metrics"))
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
            clock=self.clock,
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
        self.live.close_all()
        self.alarm_clients.close_all()
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
            "stream_clients": len(self.live.clients),
            "stream_dropped": self.live.dropped_total,
            "stream_gaps": self.live.gaps_total,
            "alarm_stream_clients": len(self.alarm_clients.clients),
            "alarm_stream_dropped": self.alarm_clients.dropped_total,
            "alarm_stream_gaps": self.alarm_clients.gaps_total,
            "control": "enabled" if self.auth and self.auth.enabled else "disabled",
        }

    # -- views -----------------------------------------------------------------------------

    def now_ns(self) -> int:
        return self.clock.time_ns()

    def alarm_control(self) -> AlarmControl:
        if self.alarms is None:
            raise json_error(web.HTTPServiceUnavailable, "alarms are not available in this daemon")
        return self.alarms

    def run_control(self) -> RunControl:
        runs = self.runs
        if runs is None:
            raise json_error(
                web.HTTPServiceUnavailable,
                "run control is not available: this daemon has no run manager (service 'runs' not running)",
            )
        return runs


def build_service(
    ctx: ServiceContext, *, runs: RunControl | None, run_config: RunConfig, alarms: AlarmControl | None = None
) -> ApiService | None:
    """Built by :func:`daq.services.build_services`: ``None`` when ``[api] enabled = false``."""
    settings: ApiSection = ctx.config.model.api
    if not settings.enabled:
        return None
    return ApiService(
        settings,
        clock=ctx.clock,
        journal=ctx.journal,
        tasks=ctx.tasks,
        board=ctx.status,
        runs=runs,
        alarms=alarms,
        run_config=run_config,
    )


__all__ = ["STATIC_DIR", "ApiService", "build_service"]
