"""The run control routes of the local API: ``/api/runs`` and the signatures.

Each route names the one run operation of :class:`daq.context.RunControl` it may call, after
checking the token, the actor and the JSON body against its fields; nothing a request sends
chooses the method, so no request can reach a service's life cycle.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from daq.api import guard
from daq.api.auth import BearerAuth
from daq.api.guard import dumps_json, json_error
from daq.context import RunControl
from daq.errors import DaqError
from daq.journal.journal import Journal

if TYPE_CHECKING:
    from daq.runs.signatures import RunConfig

#: (required, optional) fields of each run operation's JSON body; ``actor`` comes with any.
START_FIELDS = ({"batch", "product", "nuclide", "operator"}, {"method", "reason"})
STOP_FIELDS: tuple[set[str], set[str]] = (set(), {"reason"})
ANNOTATE_FIELDS = ({"text", "reason"}, {"instrument"})
T0_FIELDS = ({"reason"}, {"instrument", "ts_ns"})


async def _body(request: web.Request, fields: tuple[set[str], set[str]]) -> tuple[dict[str, Any], str]:
    """The JSON body checked against (required, optional) fields, and the actor."""
    required, optional = fields
    if request.can_read_body:
        text = await request.text()
        if not guard.json_depth_ok(text):
            raise json_error(web.HTTPBadRequest, f"the body nests deeper than {guard.MAX_BODY_DEPTH} levels")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise json_error(web.HTTPBadRequest, "the body must be a JSON object") from None
    else:
        body = {}
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "the body must be a JSON object")
    actor = body.pop("actor", None) or request.headers.get("X-Actor")
    if not actor or not isinstance(actor, str):
        raise json_error(
            web.HTTPBadRequest, 'name who does this: an X-Actor header or an "actor" field in the body'
        )
    unknown = sorted(set(body) - required - optional)
    missing = sorted(required - set(body))
    if unknown or missing:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "",
        ]
        raise json_error(web.HTTPBadRequest, "; ".join(p for p in parts if p))
    for key, value in body.items():
        ok = (
            (isinstance(value, int) and not isinstance(value, bool))
            if key == "ts_ns"
            else isinstance(value, str)
        )
        if not ok and value is not None:
            expected = "an integer (ns since the epoch)" if key == "ts_ns" else "a string"
            raise json_error(web.HTTPBadRequest, f"{key}: expected {expected}")
        if key == "ts_ns" and value is not None:
            guard.instant_ns(key, value)
    return body, actor


async def signing_endpoint(request: web.Request, journal: Journal, run_config: RunConfig) -> web.Response:
    """``POST /api/runs/{run_id}/signatures`` with ``{"user_id", "password", "meaning",
    "comment"?}``: loopback peers only; a refusal is 403 (and in the audit trail)."""
    from daq.runs.signatures import SignatureRefused, sign_live
    from daq.users import UserError

    if request.remote not in ("127.0.0.1", "::1"):
        raise json_error(web.HTTPForbidden, "signatures are accepted from this machine (loopback) only")
    text = await request.text() if request.can_read_body else ""
    try:
        body = json.loads(text) if guard.json_depth_ok(text) else None
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "the body must be a JSON object")
    fields = {"user_id", "password", "meaning", "comment"}
    unknown = sorted(set(body) - fields)
    missing = sorted({"user_id", "password", "meaning"} - set(body))
    if unknown or missing or not all(isinstance(v, str) for v in body.values() if v is not None):
        raise json_error(
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
            run_config=run_config,
        )
    except (SignatureRefused, UserError) as exc:
        raise json_error(web.HTTPForbidden, str(exc)) from None
    except DaqError as exc:
        raise json_error(web.HTTPConflict, str(exc)) from None
    return web.json_response(sig, dumps=dumps_json)


class RunRoutesParts(Protocol):
    """What the run routes use of the service: the token check, the journal and the config in
    force for a run (signatures), and the run operations."""

    auth: BearerAuth | None
    journal: Journal
    run_config: RunConfig

    def run_control(self) -> RunControl: ...


def add_run_routes(routes: web.RouteTableDef, svc: RunRoutesParts) -> None:
    """Add the run routes to ``routes``."""

    @routes.get("/api/runs")
    async def list_runs(request: web.Request) -> web.Response:
        runs = svc.run_control()
        # The run manager reads the journal: off the event loop.
        listed = await asyncio.get_running_loop().run_in_executor(None, runs.list_runs)
        return web.json_response({"runs": listed, "active": runs.active()}, dumps=dumps_json)

    @routes.get("/api/runs/active")
    async def active_run(request: web.Request) -> web.Response:
        runs = svc.run_control()
        return web.json_response({"active": runs.active()}, dumps=dumps_json)

    @routes.get("/api/runs/{run_id}")
    async def show_run(request: web.Request) -> web.Response:
        runs = svc.run_control()
        run_id = request.match_info["run_id"]
        found = await asyncio.get_running_loop().run_in_executor(None, runs.get, run_id)
        if found is None:
            raise json_error(web.HTTPNotFound, f"no run {run_id!r}")
        return web.json_response(found, dumps=dumps_json)

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
            raise json_error(web.HTTPConflict, str(exc)) from None
        except ValueError as exc:
            raise json_error(web.HTTPBadRequest, str(exc)) from None
        return web.json_response(result, dumps=dumps_json)

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
        return await signing_endpoint(request, svc.journal, svc.run_config)
