"""The alarm routes of the local API: ``GET /api/alarms``, ``POST /api/alarms/{id}/ack`` and
the live alarm stream ``GET /api/alarms/stream`` (the JSON shapes are in docs/local-api.md).

The stream is NDJSON: first the alarms not in normal (``"kind": "active"``), then each
transition as it happens, and ``{"type": "heartbeat"}`` when there is nothing to send. Like the
readings' stream, publishing never waits: each client has a bounded queue and a client that
falls behind by :data:`ALARM_QUEUE` transitions, or whose socket accepts nothing for the
write timeout, is disconnected.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from typing import Any, Protocol

from aiohttp import web

from daq.api.auth import BearerAuth
from daq.api.config import ApiSection
from daq.api.control import _body
from daq.api.guard import dumps_json, json_error
from daq.context import AlarmControl
from daq.errors import DaqError

#: (required, optional) fields of an acknowledgement's body; ``actor`` comes with it.
ACK_FIELDS: tuple[set[str], set[str]] = ({"comment"}, set())


#: Transitions a stream client may have waiting before it is disconnected.
ALARM_QUEUE = 1000


class AlarmFeed:
    """The clients of the live alarm stream; :meth:`publish` is the engine's listener."""

    def __init__(self) -> None:
        self.clients: set[_FeedClient] = set()
        self.dropped_total = 0

    def publish(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        for client in tuple(self.clients):
            if len(client.lines) >= ALARM_QUEUE:
                self.drop(client)
                continue
            client.lines.append(line)
            client.wake.set()

    def drop(self, client: _FeedClient) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.dropped_total += 1
        client.closed = True
        client.wake.set()

    def close_all(self) -> None:
        for client in tuple(self.clients):
            client.closed = True
            client.wake.set()
        self.clients.clear()


class _FeedClient:
    def __init__(self) -> None:
        self.lines: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.closed = False


class AlarmRoutesParts(Protocol):
    """What the alarm routes use of the service: the token check, the alarms, the feed of
    transitions and the stream's timings."""

    auth: BearerAuth | None
    alarm_feed: AlarmFeed
    settings: ApiSection

    def alarm_control(self) -> AlarmControl: ...


def add_alarm_routes(routes: web.RouteTableDef, svc: AlarmRoutesParts) -> None:
    """Add the alarm routes to ``routes``."""

    @routes.get("/api/alarms")
    async def list_alarms(request: web.Request) -> web.Response:
        return web.json_response(svc.alarm_control().listing(), dumps=dumps_json)

    @routes.get("/api/alarms/stream")
    async def alarm_stream(request: web.Request) -> web.StreamResponse:
        alarms = svc.alarm_control()
        feed, settings = svc.alarm_feed, svc.settings
        client = _FeedClient()
        feed.clients.add(client)
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        try:
            await resp.prepare(request)

            async def write(data: bytes) -> None:
                async with asyncio.timeout(settings.client_write_timeout_s):
                    await resp.write(data)

            for event in alarms.snapshot():
                await write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            while not client.closed:
                if not client.lines:
                    client.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(settings.heartbeat_s):
                            await client.wake.wait()
                if client.lines:
                    lines, client.lines = client.lines, collections.deque()
                    await write(b"".join(lines))
                elif not client.closed:
                    await write(b'{"type":"heartbeat"}\n')
        except TimeoutError:
            feed.drop(client)
        except ConnectionError:
            pass
        finally:
            feed.clients.discard(client)
        return resp

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


__all__ = ["ACK_FIELDS", "ALARM_QUEUE", "AlarmFeed", "add_alarm_routes"]
