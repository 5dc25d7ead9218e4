"""The ``[[instruments]]`` table of an OPC UA server: the node map, security and timing keys."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from daq.config.base import (
    Decimals,
    InstrumentBase,
    Milliseconds,
    Name,
    NonNegativeMilliseconds,
    PositiveCount,
    PositiveSeconds,
    StrictModel,
)


class OpcUaNode(StrictModel):
    """One channel of the node map; give exactly one of ``node_id`` or ``browse_path``."""

    channel: Name
    node_id: str | None = None
    browse_path: str | None = None
    unit: str = ""
    description: str = ""
    #: Overrides the instrument's sampling interval for this node (ms; 0 = as fast as possible).
    sampling_interval_ms: NonNegativeMilliseconds | None = None
    #: Overrides the instrument's server-side queue size for this node.
    queue_size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    #: Read this node by polling every ``period_s`` instead of subscribing to it.
    poll: bool = False
    #: For text nodes (a step name): the number stored for each text. Unmapped text is UNCERTAIN.
    states: dict[str, float] = Field(default_factory=dict)
    #: Digits shown after the decimal point (the live page); default: from the unit.
    decimals: Decimals | None = None

    @model_validator(mode="after")
    def _check_address(self) -> OpcUaNode:
        from asyncua import ua

        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        if self.node_id is not None:
            try:
                ua.NodeId.from_string(self.node_id)
            except Exception as exc:
                raise ValueError(
                    f"node_id {self.node_id!r} is not a NodeId "
                    "(expected e.g. 'ns=2;s=Synth.temp' or 'i=2258')"
                ) from exc
        if self.browse_path is not None:
            try:
                ua.RelativePath.from_string(self.browse_path)
            except Exception as exc:
                raise ValueError(
                    f"browse_path {self.browse_path!r} is not a relative path "
                    "(expected e.g. '/2:Synth/2:reactor_temp', relative to the Objects folder)"
                ) from exc
        return self


class OpcUaSecurity(StrictModel):
    """Message security of the connection; ``mode = "None"`` takes no other key."""

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256", "Aes256_Sha256_RsaPss"] | None = None
    #: The client's application instance certificate (DER or PEM) and its private key (PEM or DER).
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    #: Pin: only this exact server certificate is accepted.
    server_certificate_file: Path | None = None
    #: Trust list: a directory of trusted server (or CA) certificates, DER or PEM.
    trust_list_dir: Path | None = None
    #: Must equal the URI in the client certificate's subjectAltName.
    application_uri: str = "urn:hotcell-daq:opcua-client"

    @model_validator(mode="after")
    def _check(self) -> OpcUaSecurity:
        extra = [
            k
            for k in (
                "policy",
                "certificate_file",
                "private_key_file",
                "server_certificate_file",
                "trust_list_dir",
            )
            if getattr(self, k) is not None
        ]
        if self.mode == "None":
            if extra:
                raise ValueError(
                    f"mode 'None' takes no {', '.join(extra)}; set mode to Sign or SignAndEncrypt"
                )
            return self
        missing = [k for k in ("policy", "certificate_file", "private_key_file") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"mode {self.mode!r} needs {', '.join(missing)}")
        if (self.server_certificate_file is None) == (self.trust_list_dir is None):
            raise ValueError(
                "give exactly one of server_certificate_file (pin) or trust_list_dir (trust list) "
                "to check the server certificate"
            )
        return self


class OpcUaConfig(InstrumentBase):
    kind: Literal["opcua"]
    #: ``opc.tcp://HOST:PORT[/path]``; credentials never go in the URL.
    url: Annotated[str, Field(pattern=r"^opc\.tcp://[^@/\s]+(/\S*)?$")]
    #: ``subscribe`` (default) or ``poll`` (every node read each ``period_s``).
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: Milliseconds = 100.0
    sampling_interval_ms: NonNegativeMilliseconds = 100.0
    #: Server-side queue per monitored item: values sampled between two publishes.
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    #: The server sends a keep-alive at least this often when nothing changes.
    keepalive_s: PositiveSeconds = 1.0
    #: No publish response (data or keep-alive) for this long means the link is lost.
    stale_after_s: PositiveSeconds = 5.0
    #: asyncua reads the server state this often to notice a dead connection.
    watchdog_s: PositiveSeconds = 1.0
    request_timeout_s: PositiveSeconds = 4.0
    #: Nodes that failed to resolve or subscribe are retried this often.
    node_retry_s: PositiveSeconds = 10.0
    #: Readings buffered between two ``read()`` calls; default: sized from the map.
    max_pending: Annotated[PositiveCount, Field(ge=10)] | None = None
    username: str | None = None
    password_env: str | None = None
    password_credential: str | None = None
    security: OpcUaSecurity = OpcUaSecurity()
    nodes: Annotated[list[OpcUaNode], Field(min_length=1)]

    @model_validator(mode="after")
    def _check_map(self) -> OpcUaConfig:
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.channel in seen:
                raise ValueError(f"nodes[{i}]: channel {node.channel!r} is mapped twice")
            seen.add(node.channel)
        if self.password_env and self.password_credential:
            raise ValueError("give one of password_env or password_credential, not both")
        if (self.password_env or self.password_credential) and not self.username:
            raise ValueError("a password needs a username")
        if self.username and self.security.mode == "None":
            raise ValueError("a username and password need security mode Sign or SignAndEncrypt")
        if self.stale_after_s <= self.keepalive_s:
            raise ValueError("stale_after_s must be longer than keepalive_s")
        return self

    def pending_limit(self) -> int:
        """The reading buffer: every node's queue, for ``stale_after_s`` worth of publishes."""
        if self.max_pending is not None:
            return self.max_pending
        per_publish = sum(n.queue_size or self.queue_size for n in self.nodes)
        publishes = math.ceil(self.stale_after_s * 1000 / self.publishing_interval_ms)
        return max(1000, per_publish * max(1, publishes))
