"""Configuration of the sinks the journal is forwarded to (``[[sinks]]`` tables)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from daq.config.base import Name, NonNegativeSeconds, PositiveCount, Seconds, StrictModel

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
CredentialName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]+$")]

#: Query parameters that would carry a secret in the URL (InfluxDB 1.x's ``p``, a token).
_SECRET_QUERY_KEYS = frozenset({"p", "password", "token", "secret", "api_key", "apikey"})


def _no_credentials_in_url(url: str) -> str:
    """A sink URL is logged, shown in status and kept in the journal's config copy: it must not
    carry a password or a token. Those belong in ``token_credential``/``token_env``."""
    parts = urllib.parse.urlsplit(url)
    # A "secret_in_value" error is reported without the value, so the error never echoes it.
    if parts.password is not None:
        raise PydanticCustomError(
            "secret_in_value",
            "the URL carries a password (user:password@); give the token with token_credential "
            "(a systemd credential) or token_env instead",
        )
    for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in _SECRET_QUERY_KEYS:
            raise PydanticCustomError(
                "secret_in_value",
                "the URL carries a credential in its query ({key}=...); give the token with "
                "token_credential (a systemd credential) or token_env instead",
                {"key": key},
            )
    return url


SinkUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$"), AfterValidator(_no_credentials_in_url)]


class InfluxSink(StrictModel):
    """An InfluxDB v2 write API endpoint (InfluxDB 2.x, InfluxDB 3's v2-compatible endpoint,
    VictoriaMetrics, ...).

    The token comes from ``token_credential`` (a systemd credential) or ``token_env`` (an
    environment variable); a server without authentication needs neither. Batches hold at
    most ``batch_size`` points and leave at the latest ``max_age_s`` after their first point
    was committed. Failed writes retry from ``backoff_initial_s`` doubling up to
    ``backoff_cap_s``; authentication failures retry at the cap.
    """

    name: Name
    kind: Literal["influxdb"]
    enabled: bool = True
    url: SinkUrl
    org: Annotated[str, Field(min_length=1)]
    bucket: Annotated[str, Field(min_length=1)]
    token_env: EnvName | None = None
    token_credential: CredentialName | None = None
    batch_size: Annotated[PositiveCount, Field(le=100_000)] = 5000
    max_age_s: Annotated[Seconds, Field(le=3600)] = 1.0
    timeout_s: Annotated[Seconds, Field(le=3600)] = 10.0
    verify_tls: bool = True
    #: A CA bundle to verify the server with (default: the system's trust store).
    ca_file: Path | None = None
    gzip: bool = True
    #: The timestamp precision the server keeps (InfluxDB: ns; VictoriaMetrics: ms). Readings
    #: of one series that coincide at this precision get a ``dup`` tag so none overwrites
    #: another; timestamps are always sent in nanoseconds.
    precision: Literal["ns", "us", "ms", "s"] = "ns"
    backoff_initial_s: Seconds = 0.5
    backoff_cap_s: Seconds = 30.0
    #: The longest ``Retry-After`` honoured; a larger one is cut to this.
    retry_after_max_s: Seconds = 600.0
    #: How often the sink's progress (backlog, oldest pending, rate, last error) is logged.
    log_every_s: Seconds = 60.0
    #: At a clean stop, how long the forwarder may go on sending what is committed (the final
    #: drain); a request on the wire then is never cut, so it may end up to ``timeout_s`` later.
    drain_on_stop_s: Annotated[NonNegativeSeconds, Field(le=60)] = 5.0

    @model_validator(mode="after")
    def _check(self) -> InfluxSink:
        if self.token_env and self.token_credential:
            raise ValueError("give token_env or token_credential, not both")
        if self.backoff_initial_s > self.backoff_cap_s:
            raise ValueError("backoff_initial_s must not exceed backoff_cap_s")
        return self


def _unique_names(sinks: list[InfluxSink]) -> list[InfluxSink]:
    seen: set[str] = set()
    for i, sink in enumerate(sinks):
        if sink.name in seen:
            raise ValueError(f"duplicate sink name {sink.name!r} (sinks[{i}]); each sink has its own cursor")
        seen.add(sink.name)
    return sinks


#: The type of the top-level ``sinks`` list.
Sinks = Annotated[list[InfluxSink], AfterValidator(_unique_names)]


RESOLUTION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
