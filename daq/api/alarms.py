"""The alarm routes of the local API: ``GET /api/alarms`` and ``POST /api/alarms/{id}/ack``
(the JSON shapes are in docs/local-api.md and docs/alarms.md)."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from daq.api.auth import BearerAuth
from daq.api.control import _body
from daq.api.guard import dumps_json, json_error
from daq.context import AlarmControl
from daq.errors import DaqError

#: (required, optional) fields of an acknowledgement's body; ``actor`` comes with it.
ACK_FIELDS: tuple[set[str], set[str]] = ({"comment"}, set())


class AlarmRoutesParts(Protocol):
    """What the alarm routes use of the service: the token check and the alarms."""

    auth: BearerAuth | None

    def alarm_control(self) -> AlarmControl: ...


def add_alarm_routes(routes: web.RouteTableDef, svc: AlarmRoutesParts) -> None:
    """Add the alarm routes to ``routes``."""

    @routes.get("/api/alarms")
    async def list_alarms(request: web.Request) -> web.Response:
        return web.json_response(svc.alarm_control().listing(), dumps=dumps_json)

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


__all__ = ["ACK_FIELDS", "add_alarm_routes"]
