"""The bearer-token check of the control endpoints (run start, stop, annotate, t0).

The token is resolved once when the API starts, from the environment variable or systemd
credential named in ``[api]`` (:func:`daq.secrets.resolve_secret`). Without a token, run
control over the API is disabled and every control request answers 401 saying why.
Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import json

from aiohttp import web

from daq.api.config import ApiSection
from daq.errors import ConfigError
from daq.secrets import resolve_secret


class BearerAuth:
    """Holds the resolved token (or why there is none)."""

    def __init__(self, settings: ApiSection):
        self.token: str | None = None
        self.disabled_reason: str | None = None
        if not settings.token_env and not settings.token_credential:
            self.disabled_reason = "no api.token_env or api.token_credential is configured"
            return
        try:
            self.token = resolve_secret(settings.token_env, settings.token_credential, "api token")
        except ConfigError as exc:
            self.disabled_reason = str(exc)

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def check(self, request: web.Request) -> None:
        """Raise 401 unless the request carries ``Authorization: Bearer <token>``."""
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if self.token is None:
            message = f"run control over the API is disabled: {self.disabled_reason}"
        elif scheme.lower() != "bearer" or not given.strip():
            message = "this endpoint needs 'Authorization: Bearer <token>'"
        elif hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return
        else:
            message = "wrong token"
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": message}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="hotcell-daq"'},
        )
