"""The writer: one POST to a sink's InfluxDB v2 write endpoint, answered by one typed outcome.

Contract: :meth:`InfluxWriter.post` sends one request body once and returns an
:class:`~daq.forward.policy.Accepted`, :class:`~daq.forward.policy.Rejected` or
:class:`~daq.forward.policy.Retry` (classified by :func:`daq.forward.policy.classify`, as
Telegraf's outputs answer accept, reject or retry). It never retries, never sleeps and never
raises for what a server or the network does; what an outcome means (back off, bisect,
quarantine, alarm) is the delivery policy's business. :meth:`InfluxWriter.encode` makes the
body of a list of lines, the same on every attempt.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import json
import ssl
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import aiohttp

from daq.clock import Clock
from daq.forward.config import InfluxSink
from daq.forward.policy import Accepted, Outcome, Retry, classify


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date), if any."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now_s)
    return None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return str(json.loads(body)["message"])[:500]
        return body.strip()[:500]
    return str(getattr(exc, "reason", "") or exc)[:500]


def describe(exc: BaseException, timeout_s: float) -> str:
    """A transport error as one line that says what happened (a bare ``TimeoutError`` has no
    text of its own)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s (timeout)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def safe_url(url: str) -> str:
    """The URL without any user:password part (never log a secret)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


class InfluxWriter:
    """Writes request bodies to one sink through influxdb-client's async write service."""

    def __init__(self, sink: InfluxSink, *, clock: Clock, token: str | None = None):
        self.sink = sink
        self.clock = clock
        self.token = token
        #: Requests sent (every attempt counts).
        self.requests = 0
        self._client: Any = None
        self._write_api: Any = None
        self._encoding: dict[str, str] = {"content_encoding": "gzip"} if sink.gzip else {}

    def encode(self, lines: Sequence[str]) -> bytes:
        """The request body of ``lines`` (gzip level 1 when the sink says so: the client would
        compress at level 9, about 12 us per point)."""
        body = "\n".join(lines).encode("utf-8")
        return gzip.compress(body, compresslevel=1) if self.sink.gzip else body

    async def open(self) -> None:
        """Create the HTTP client (no request is made yet)."""
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.service.write_service import WriteService

        kwargs: dict[str, Any] = {}
        if self.sink.url.startswith("https://"):
            ctx = ssl.create_default_context(cafile=str(self.sink.ca_file) if self.sink.ca_file else None)
            if not self.sink.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["ssl_context"] = ctx
        self._client = InfluxDBClientAsync(
            url=self.sink.url,
            token=self.token or "",
            org=self.sink.org,
            timeout=int(self.sink.timeout_s * 1000),
            # The body is compressed by encode() (level 1) and Content-Encoding set per request.
            enable_gzip=False,
            verify_ssl=self.sink.verify_tls,
            **kwargs,
        )
        self._write_api = WriteService(self._client.api_client)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def post(self, body: bytes) -> Outcome:
        """One write request of ``body`` (from :meth:`encode`), its answer as one outcome."""
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        self.requests += 1
        try:
            await self._write_api.post_write_async(
                org=self.sink.org,
                bucket=self.sink.bucket,
                body=body,
                precision=WritePrecision.NS,
                content_type="text/plain; charset=utf-8",
                async_req=False,
                _return_http_data_only=False,
                **self._encoding,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            after = retry_after_s(getattr(exc, "retry_after", None), self.clock.time_ns() / 1e9)
            return classify(status, _message(exc), after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(describe(exc, self.sink.timeout_s))
        return Accepted()
