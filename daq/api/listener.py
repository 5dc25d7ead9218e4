"""The local API's own accept loop: resource limits, so the API can never starve acquisition.

The API is served from one listening socket whose connections this module admits:

- **A cap on connections**: at most ``max_connections``, and never more than a quarter of the
  process's file-descriptor limit (``RLIMIT_NOFILE``), so instruments, the journal and the
  sinks always find descriptors. At the cap, the oldest connection without a request in
  progress is closed to admit the new one (idle sockets cannot lock out ``/healthz``); when
  every connection is busy, the new one is refused.
- **A header timeout**: a connection that has not sent a complete request head within
  ``header_timeout_s`` of being accepted is closed (slow or silent clients).
- **An idle timeout**: a keep-alive connection idle for ``idle_timeout_s`` is closed (aiohttp's
  keep-alive timeout, which also runs from the accept).
- **Quiet back-off** when ``accept()`` fails for want of resources (``EMFILE``, ``ENFILE``,
  ``ENOBUFS``, ``ENOMEM``): one warning per episode, counted, then retries with the one backoff
  (:class:`daq.backoff.Backoff`, from 50 ms doubling to 1 s, on the injected clock); asyncio's own
  server would log a traceback for every failed accept.

Request sizes are limited where the application is built (:func:`daq.api.app.make_app`):
the body by ``max_body_bytes``, request and header lines by aiohttp's parser limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from typing import Any

from aiohttp import web

from daq.backoff import Backoff
from daq.clock import Clock, SystemClock
from daq.logs import get_logger

log = get_logger("daq.api")

#: ``accept()`` errors that mean "out of resources now", not "the socket is broken".
STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_INITIAL_S = 0.05
BACKOFF_CAP_S = 1.0
BACKLOG = 128


def connection_cap(configured: int) -> int:
    """``configured``, but at most a quarter of the soft ``RLIMIT_NOFILE`` (at least 4)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(4, min(configured, soft // 4))


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host``:``port`` (``port`` 0: any free port)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Accepts connections for one aiohttp :class:`web.Server` (see the module docstring)."""

    def __init__(
        self,
        server: web.Server,
        sock: socket.socket,
        *,
        max_connections: int,
        header_timeout_s: float,
        clock: Clock | None = None,
    ):
        self.server = server
        self.clock = clock if clock is not None else SystemClock()
        self.sock = sock
        self.max_connections = connection_cap(max_connections)
        self.header_timeout_s = header_timeout_s
        self.accepted = 0
        self.evicted = 0
        self.refused = 0
        self.header_timeouts = 0
        self.accept_failures = 0
        self._starved_since: float | None = None
        self._accepted_at: dict[Any, float] = {}

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def status(self) -> dict[str, Any]:
        return {
            "connections": len(self.server.connections),
            "max_connections": self.max_connections,
            "accepted": self.accepted,
            "evicted_idle": self.evicted,
            "refused": self.refused,
            "header_timeouts": self.header_timeouts,
            "accept_failures": self.accept_failures,
        }

    async def run(self) -> None:
        """Accept until cancelled; an error other than resource starvation is raised (the
        task tree restarts the API)."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_CAP_S)
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno not in STARVED:
                    raise
                self.accept_failures += 1
                if self._starved_since is None:
                    self._starved_since = self.clock.monotonic_ns() / 1e9
                    log.warning(
                        "api cannot accept connections; backing off",
                        error=exc.strerror or str(exc),
                        connections=len(self.server.connections),
                    )
                await backoff.wait(self.clock)
                continue
            backoff.reset()
            if self._starved_since is not None:
                log.info(
                    "api accepts connections again",
                    starved_s=round(self.clock.monotonic_ns() / 1e9 - self._starved_since, 3),
                    failed_accepts=self.accept_failures,
                )
                self._starved_since = None
            await self._admit(loop, conn)

    async def _admit(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        handlers = self.server.connections
        if len(handlers) >= self.max_connections:
            idle = [h for h in handlers if not getattr(h, "_request_in_progress", False)]
            if not idle:
                self.refused += 1
                conn.close()
                return
            # The oldest idle connection makes room: idle sockets cannot lock others out.
            victim = min(idle, key=lambda h: self._accepted_at.get(h, 0.0))
            self._accepted_at.pop(victim, None)
            victim.force_close()
            self.evicted += 1
        conn.setblocking(False)
        try:
            _, handler = await loop.connect_accepted_socket(self.server, conn)
        except OSError:
            conn.close()
            return
        self.accepted += 1
        self._accepted_at[handler] = time.monotonic()
        loop.call_later(self.header_timeout_s, self._header_deadline, handler)
        # Forget handlers that are gone (bounded by the cap plus what closed since).
        if len(self._accepted_at) > 2 * self.max_connections:
            live = set(self.server.connections)
            self._accepted_at = {h: t for h, t in self._accepted_at.items() if h in live}

    def _header_deadline(self, handler: Any) -> None:
        """Close a connection that has not sent one complete request head in time."""
        if getattr(handler, "_request_count", 1) == 0 and getattr(handler, "transport", None) is not None:
            self.header_timeouts += 1
            self._accepted_at.pop(handler, None)
            with contextlib.suppress(Exception):
                handler.force_close()
