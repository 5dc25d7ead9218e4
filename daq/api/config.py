"""The ``[api]`` section: where the local API listens and who may control runs.

The API binds to the loopback interface. Binding to any other address serves live data (and,
with the token, run control) to the network, so it needs ``allow_non_loopback = true``
written in the config: a typo in ``listen`` can never expose the line PC by accident.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from daq.config.base import Port, PositiveCount, Seconds, StrictModel

#: A DNS name or an IP address (IPv6 optionally in brackets).
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$")]


class ApiSection(StrictModel):
    """The local HTTP API and live page (``http://127.0.0.1:8470/`` by default).

    The control endpoints (run start, stop, annotate, t0) need ``Authorization: Bearer <token>``;
    the token comes from the environment variable ``token_env`` or the systemd credential
    ``token_credential``. Without either, run control over the API is disabled.
    ``client_queue`` bounds, in readings (alarm transitions for the alarm stream), what a
    live-stream client may have waiting; a client that falls that far behind gets a gap marker
    and what it missed from the journal (never waited for); one whose socket accepts nothing
    for ``client_write_timeout_s`` is disconnected.
    """

    enabled: bool = True
    allow_non_loopback: bool = False
    listen: str = "127.0.0.1"
    #: 0 picks a free port (tests); the bound port is in the log and in ``/api/status``.
    port: Port = 8470
    token_env: str | None = None
    token_credential: str | None = None
    client_queue: Annotated[PositiveCount, Field(ge=100, le=1_000_000)] = 20_000
    client_write_timeout_s: Annotated[Seconds, Field(le=3600)] = 10.0
    #: How far back a client may ask for a replay (``since``), in readings (alarm events for
    #: the alarm stream's ``since_id``).
    replay_limit: Annotated[PositiveCount, Field(le=1_000_000)] = 100_000
    heartbeat_s: Annotated[Seconds, Field(le=3600)] = 5.0
    #: Host names (besides loopback names and the listen address) by which browsers may reach
    #: the API, e.g. the line PC's name behind a reverse proxy. Requests whose ``Host`` or
    #: ``Origin`` names another host are refused (DNS rebinding, cross-site posts).
    allowed_hosts: list[HostName] = Field(default_factory=list)
    #: Resource limits (see daq.api.listener): connections at once (never more than a quarter
    #: of the process's file limit), seconds for a new connection to send its request head,
    #: seconds a keep-alive connection may idle, and the largest request body in bytes.
    max_connections: Annotated[PositiveCount, Field(ge=4, le=65_536)] = 256
    header_timeout_s: Annotated[Seconds, Field(le=300)] = 10.0
    idle_timeout_s: Annotated[Seconds, Field(le=3600)] = 60.0
    max_body_bytes: Annotated[PositiveCount, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024

    @field_validator("listen")
    @classmethod
    def _loopback_unless_allowed(cls, value: str, info: ValidationInfo) -> str:
        if value == "localhost":
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"expected an IP address such as 127.0.0.1 or ::1 (got {value!r})") from None
        if not address.is_loopback and not info.data.get("allow_non_loopback", False):
            raise ValueError(
                f"{value} is not a loopback address: serving the API to the network needs "
                "allow_non_loopback = true in [api]"
            )
        return value
