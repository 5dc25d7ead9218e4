"""Request validation of the local API: who may ask (Host and Origin) and what numbers it may
carry (ranges of query parameters and body fields).

**Host and Origin.** A web page from anywhere can make a browser send requests to
``127.0.0.1``; with DNS rebinding it can even read the answers, because the browser then takes
``http://evil.example:8470`` to be the page's own origin. Such requests carry the foreign name
in ``Host``. The API therefore answers only requests whose ``Host`` is a loopback name
(``localhost``, ``*.localhost``, a loopback address), the ``listen`` address, or a name listed
in ``[api] allowed_hosts`` (403 otherwise), and refuses any request whose ``Origin`` is not one
of those hosts (403): a page elsewhere cannot post run control, even with a valid token. A
request without ``Host`` or ``Origin`` (a command-line client) is not refused for that.

**Numbers.** Every number taken from a query or a body is checked against the range it can
have before it reaches the journal or SQLite's 64-bit integers: an out-of-range one is a 400
naming the parameter, never a 500.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from daq.timeparse import MAX_NS, MIN_NS

#: The deepest JSON a request body may nest (run-control bodies are flat objects).
MAX_BODY_DEPTH = 32

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dumps_json(value: Any) -> str:
    """JSON of a response body (anything else, e.g. a path, as its string)."""
    return json.dumps(value, default=str)


def json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error of class ``cls`` with ``{"error": message}`` as its JSON body."""
    return cls(text=dumps_json({"error": message}), content_type="application/json")


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=json.dumps({"error": message}), content_type="application/json")


def _hostname(authority: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, lower case, without a trailing dot."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    elif authority.count(":") == 1:
        host = authority.partition(":")[0]
    else:
        host = authority
    return host.rstrip(".")


def is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """The host names the API answers to: loopback, the listen address, and configured ones."""

    def __init__(self, listen: str, allowed: Iterable[str] = ()):
        self.allowed = {_hostname(h) for h in (listen, *allowed) if h}

    def allows(self, host: str) -> bool:
        return is_loopback_name(host) or host in self.allowed

    def check(self, request: web.Request) -> None:
        """Raise 403 for a foreign ``Host`` or ``Origin``."""
        host = request.headers.get("Host")
        if host is not None and not self.allows(_hostname(host)):
            raise _forbidden(
                f"Host {host!r} is not a name of this API (loopback, the listen address or "
                "[api] allowed_hosts): refused against DNS rebinding"
            )
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not self.allows(_hostname(parts.netloc)):
                raise _forbidden(f"cross-origin request from {origin!r} refused")

    def middleware(self) -> Any:
        @web.middleware
        async def host_and_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.check(request)
            return await handler(request)

        return host_and_origin


def int_param(name: str, text: str, lo: int, hi: int, what: str) -> int:
    """An integer query parameter within ``[lo, hi]``, or a 400 naming it."""
    try:
        value = int(text.strip())
    except ValueError:
        raise bad_request(
            f"{name}: expected {what}, an integer from {lo} to {hi} (got {text[:40]!r})"
        ) from None
    if not lo <= value <= hi:
        raise bad_request(f"{name}: {value} is out of range: expected {what}, from {lo} to {hi}")
    return value


def instant_ns(name: str, value: int) -> int:
    """A time in UTC nanoseconds that a journal record can have (1970 to 2200), or a 400."""
    if not MIN_NS <= value <= MAX_NS:
        raise bad_request(
            f"{name}: {value} is out of range: expected ns since the epoch from {MIN_NS} to {MAX_NS} "
            "(1970 to 2200)"
        )
    return value


def json_depth_ok(text: str, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether the JSON ``text`` nests at most ``limit`` arrays/objects deep (checked without
    parsing, so a deeply nested body cannot exhaust the parser's recursion)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True
