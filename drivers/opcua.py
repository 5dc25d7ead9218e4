"""OPC UA client for synthesizer and hot-cell PLCs, driven by a node map declared in config.

Each ``[[instruments.nodes]]`` entry maps one channel to a node, by NodeId
(``ns=2;s=Synth.reactor_temp``) or by a browse path relative to the Objects folder
(``/2:Synth/2:reactor_temp``). Browse paths are translated on every connect, so a server
that renumbers its namespaces after a restart is followed.

Acquisition is by subscription (subscribe, don't poll: PERFORMANCE.md): one subscription
per connection with the map's publishing interval, one monitored item per node with its
sampling interval and server-side queue size. Nodes marked ``poll = true`` (or the whole
instrument with ``mode = "poll"``) are read in one Read call per ``period_s`` instead.

The driver does not use asyncua's ``Subscription`` class: its iterator queue silently drops
the oldest notifications when full. The driver registers its own publish callback, which
turns each notification into a :class:`~daq.model.Reading` stamped on arrival and keeps
them in a buffer of ``max_pending`` readings (sized from the map). What does not fit is
counted per channel and returned as an explicit BAD ``overflow`` reading, as are gaps in
the subscription's sequence numbers and the server's own overflow bit.

Quality follows the StatusCode of each value: Good -> GOOD, Uncertain -> UNCERTAIN (value
kept), Bad -> BAD with the status name as reason and no value (never the last good one).
Source and server timestamps go to ``attrs`` (``source_ns``, ``server_ns``); the source
timestamp is also ``device_ns``. A node that does not resolve, or whose monitored item the
server refuses, gives a BAD reading and is retried every ``node_retry_s``; the others keep
streaming. Such a node is logged once (not at every retry or reconnect) and listed by
:meth:`OpcUaDriver.problems` until it is acquired again. A sampling interval the server
revised is recorded in the device information (``revised_sampling_ms``, per channel).

Loss of the server is detected by asyncua's watchdog (a ServerState read every
``watchdog_s``), by the socket closing, and by the subscription's keep-alives stopping for
``stale_after_s``; ``read()`` then raises :class:`~daq.errors.ConnectError` and the
supervisor records the gap and reconnects (this driver never reconnects by itself).

Security: ``None``, ``Sign`` or ``SignAndEncrypt`` with ``Basic256Sha256`` or
``Aes256_Sha256_RsaPss``; the client certificate and key come from files; the server
certificate is either pinned (``server_certificate_file``) or must be in, or issued by a CA
in, ``trust_list_dir``. The endpoint with exactly the configured policy and mode is used
or the connection fails: there is no fallback to a weaker one. User name and password come
from an environment variable or a systemd credential, never from the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from pydantic import Field, model_validator

from daq.clock import Clock
from daq.config.base import (
    InstrumentBase,
    Milliseconds,
    Name,
    NonNegativeMilliseconds,
    PositiveCount,
    PositiveSeconds,
    StrictModel,
)
from daq.errors import ConnectError, ProtocolError
from daq.model import DeviceInfo, Quality, Reading, Reason
from drivers.base import Driver

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.crypto import security_policies
    from asyncua.ua.uaerrors import UaStatusCodeError
    from cryptography import x509

# structlog directly: daq.logs reaches daq.daemon (via daq.systemd), which drivers may not import.
log: structlog.stdlib.BoundLogger = structlog.get_logger("drivers.opcua")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: OPC UA Part 4, 7.39.1: InfoType bits 10-11 (01 = DataValue) and the Overflow bit 7.
_INFOTYPE_MASK, _INFOTYPE_DATAVALUE, _OVERFLOW_BIT = 0x0C00, 0x0400, 0x0080
#: BadNodeIdInvalid, BadNodeIdUnknown: the node left the address space; it is resolved again.
_NODE_GONE = frozenset({0x80330000, 0x80340000})


def _policy(name: str) -> type[security_policies.SecurityPolicy]:
    from asyncua.crypto import security_policies

    policies: dict[str, type[security_policies.SecurityPolicy]] = {
        "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
        "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
    }
    return policies[name]


def _mode(name: str) -> ua.MessageSecurityMode:
    from asyncua import ua

    return {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}[
        name
    ]


# -- configuration ---------------------------------------------------------------------


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


# -- helpers -----------------------------------------------------------------------------


def _ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def read_secret(env: str | None, credential: str | None) -> str | None:
    """A secret from ``$<env>`` or ``$CREDENTIALS_DIRECTORY/<credential>``; raises ConnectError."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConnectError(f"environment variable {env} (password_env) is not set")
        return value
    if credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConnectError(
                f"password_credential {credential!r}: $CREDENTIALS_DIRECTORY is not set "
                "(run under systemd with LoadCredential=)"
            )
        path = Path(directory) / credential
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConnectError(f"password_credential {credential!r}: cannot read {path}: {exc}") from exc
    return None


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":")


class _Item:
    """A node of the map at run time."""

    __slots__ = ("_status", "node", "node_id", "report")

    def __init__(self, node: OpcUaNode):
        self.node = node
        self.node_id: ua.NodeId | None = None
        self._status: str | None = None
        #: True while a BAD record of the current failure is still to be returned.
        self.report = False

    @property
    def status(self) -> str | None:
        """Why the node is not acquired (unresolved, refused), or None."""
        return self._status

    @status.setter
    def status(self, why: str | None) -> None:
        self._status = why
        self.report = why is not None


# -- the driver --------------------------------------------------------------------------


class OpcUaDriver(Driver):
    kind = "opcua"
    config_model = OpcUaConfig
    streaming = True
    config: OpcUaConfig

    def __init__(self, config: OpcUaConfig, clock: Clock):
        super().__init__(config, clock)
        self._client: Client | None = None
        self._info: DeviceInfo | None = None
        self._items = [_Item(n) for n in config.nodes]
        self._by_handle: dict[int, _Item] = {}
        self._gone: list[int] = []
        self._pending: list[Reading] = []
        self._limit = config.pending_limit()
        #: channel -> [count, first ns, last ns, last monotonic ns, why]
        self._dropped: dict[str, list[Any]] = {}
        self._wake = asyncio.Event()
        self._lost: str | None = None
        self._sub_id: int | None = None
        self._last_seq: int | None = None
        self._last_publish_mono = 0
        self._next_poll_mono = 0
        self._next_retry_mono = 0
        self._next_handle = 1
        #: channel -> why it is unavailable, as last logged (kept across reconnects: logged once).
        self._logged_unavailable: dict[str, str] = {}
        #: channel -> the sampling interval (ms) the server revised the requested one to.
        self._revised_ms: dict[str, float] = {}

    def channels(self) -> list[tuple[str, str]]:
        return [(n.channel, n.unit) for n in self.config.nodes]

    # -- connect ---------------------------------------------------------------------

    async def connect(self) -> DeviceInfo:
        from asyncua.client.client import Client
        from asyncua.ua.uaerrors import UaError, UaStatusCodeError

        if self._client is not None and self._info is not None:
            return self._info
        cfg = self.config
        client = Client(cfg.url, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_s)
        client.application_uri = cfg.security.application_uri
        client.name = client.description = f"hotcell-daq {self.name}"
        client.product_uri = "urn:hotcell-daq"
        # One minute rather than asyncua's hour: a session abandoned by a crashed daemon is
        # cleaned up by the server soon, and servers rarely allow more than ten minutes.
        client.session_timeout = 60_000
        self._client = client
        self._reset_state()
        try:
            await self._secure(client)
            if cfg.username:
                client.set_user(cfg.username)
                password = read_secret(cfg.password_env, cfg.password_credential)
                if password is not None:
                    client.set_password(password)
            try:
                await client.connect()
            except UaStatusCodeError as exc:
                raise ConnectError(f"{self.name}: server refused the session: {_status_text(exc)}") from exc
            info = await self._device_info(client)
            await self._resolve(client, self._items)
            if cfg.mode == "subscribe":
                await self._subscribe(client)
            if self._revised_ms:
                info = dataclasses.replace(
                    info, extra={**info.extra, "revised_sampling_ms": dict(self._revised_ms)}
                )
            self._info = info
            self._note_unavailable()
        except ConnectError:
            await self.close()
            raise
        except (OSError, TimeoutError, UaError, ValueError) as exc:
            await self.close()
            raise ConnectError(f"{self.name}: cannot connect to {cfg.url}: {_describe(exc)}") from exc
        now = self.clock.monotonic_ns()
        self._last_publish_mono = now
        self._next_poll_mono = now
        self._next_retry_mono = now + int(cfg.node_retry_s * 1e9)
        return self._info

    def _reset_state(self) -> None:
        self._by_handle.clear()
        self._gone = []
        self._pending = []
        self._wake = asyncio.Event()
        self._lost = None
        self._sub_id = None
        self._last_seq = None
        self._revised_ms = {}
        for item in self._items:
            item.node_id = None
            item.status = None

    async def _secure(self, client: Client) -> None:
        from asyncua.crypto import uacrypto

        sec = self.config.security
        if sec.mode == "None":
            return
        assert sec.policy is not None
        assert sec.certificate_file is not None
        assert sec.private_key_file is not None
        policy = _policy(sec.policy)
        mode = _mode(sec.mode)
        for what, path in (
            ("certificate_file", sec.certificate_file),
            ("private_key_file", sec.private_key_file),
        ):
            if not path.is_file():
                raise ConnectError(f"{self.name}: security.{what} {str(path)!r} does not exist")
        if sec.server_certificate_file is not None:
            try:
                pinned = await uacrypto.load_certificate(sec.server_certificate_file)
            except Exception as exc:
                raise ConnectError(
                    f"{self.name}: cannot load security.server_certificate_file: {exc}"
                ) from exc
            check = _pin_checker(pinned, str(sec.server_certificate_file))
        else:
            assert sec.trust_list_dir is not None
            try:
                check = await _trust_checker(sec.trust_list_dir)
            except ConnectError as exc:
                raise ConnectError(f"{self.name}: {exc}") from exc
        # The certificate is checked before anything is encrypted to it, and again by
        # create_session (asyncua calls certificate_validator with the session's certificate).
        cert = await self._endpoint_certificate(client, policy, mode)
        try:
            await check(cert, None)
        except ConnectError as exc:
            raise ConnectError(f"{self.name}: {exc}") from exc
        # The exact policy and mode of the checked endpoint: asyncua never downgrades it.
        await client.set_security(
            policy,
            str(sec.certificate_file),
            str(sec.private_key_file),
            server_certificate=_der(cert),
            mode=mode,
        )
        client.certificate_validator = check

    async def _endpoint_certificate(
        self, client: Client, policy: type[security_policies.SecurityPolicy], mode: ua.MessageSecurityMode
    ) -> x509.Certificate:
        """The certificate of the endpoint with exactly ``policy`` and ``mode``, or ConnectError."""
        from asyncua.ua.uaerrors import UaError
        from cryptography import x509

        try:
            endpoints = await client.connect_and_get_server_endpoints()
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectError(
                f"{self.name}: cannot list endpoints of {self.config.url}: {_describe(exc)}"
            ) from exc
        matching = [ep for ep in endpoints if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode]
        if not matching:
            offered = sorted(
                {f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints}
            )
            raise ConnectError(
                f"{self.name}: server offers no endpoint with {self.config.security.policy} "
                f"{self.config.security.mode} (offered: {', '.join(offered)}); not falling back to another"
            )
        der = matching[0].ServerCertificate
        if not der:
            raise ConnectError(f"{self.name}: the server's endpoint carries no certificate")
        try:
            return x509.load_der_x509_certificate(_first_cert(der))
        except ValueError as exc:
            raise ConnectError(f"{self.name}: the server's certificate does not parse: {exc}") from exc

    async def _device_info(self, client: Client) -> DeviceInfo:
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds
        from asyncua.ua.object_ids import ObjectIds
        from asyncua.ua.uatypes import Int32

        ids = [
            ObjectIds.Server_ServerStatus_BuildInfo_ManufacturerName,
            ObjectIds.Server_ServerStatus_BuildInfo_ProductName,
            ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion,
            ObjectIds.Server_ServerStatus_BuildInfo_BuildNumber,
        ]
        values = await client.uaclient.read_attributes([ua.NodeId(Int32(i)) for i in ids], AttributeIds.Value)
        texts = [
            str(v.Value.Value) if v.Value is not None and v.Value.Value is not None else "" for v in values
        ]
        maker, product, version, build = texts
        return DeviceInfo(
            model=" ".join(t for t in (maker, product) if t) or "OPC UA server",
            firmware=" ".join(t for t in (version, build) if t) or None,
            extra={"url": self.config.url, "security": self.config.security.mode},
        )

    async def _resolve(self, client: Client, items: list[_Item]) -> None:
        """Turn browse paths into NodeIds (one call); a path that does not resolve marks its node."""
        from asyncua import ua
        from asyncua.ua.object_ids import ObjectIds
        from asyncua.ua.uatypes import Int32

        paths = [it for it in items if it.node.browse_path is not None]
        for it in items:
            if it.node.node_id is not None:
                it.node_id = ua.NodeId.from_string(it.node.node_id)
                it.status = None
        if not paths:
            return
        results = await client.translate_browsepaths(
            ua.NodeId(Int32(ObjectIds.ObjectsFolder)), [it.node.browse_path or "" for it in paths]
        )
        for it, res in zip(paths, results, strict=True):
            if res.StatusCode.is_good() and res.Targets:
                target = res.Targets[0].TargetId
                it.node_id = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                it.status = None
            else:
                it.node_id = None
                it.status = f"browse path does not resolve: {res.StatusCode.name}"

    async def _subscribe(self, client: Client) -> None:
        from asyncua import ua

        cfg = self.config
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = max(
            1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms)
        )
        # The lifetime must be at least three keep-alives (Part 4, 5.13.2).
        params.RequestedLifetimeCount = max(3 * params.RequestedMaxKeepAliveCount, 100)
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0

        # Bound to this client: a late callback from a client already closed is ignored.
        def on_publish(result: ua.PublishResult) -> None:
            if self._client is client:
                self._on_publish(result)

        result = await client.uaclient.create_subscription(params, on_publish)
        self._sub_id = result.SubscriptionId
        await self._monitor(client, [it for it in self._items if not it.node.poll])

    async def _monitor(self, client: Client, items: list[_Item]) -> None:
        """Create one monitored item per resolved node; a refusal marks only that node."""
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds

        cfg = self.config
        wanted = [it for it in items if it.node_id is not None]
        if not wanted or self._sub_id is None:
            return
        requests = []
        handles = []
        for it in wanted:
            rv = ua.ReadValueId()
            rv.NodeId = it.node_id
            rv.AttributeId = AttributeIds.Value
            mp = ua.MonitoringParameters()
            handle = self._next_handle
            self._next_handle += 1
            mp.ClientHandle = handle
            si = it.node.sampling_interval_ms
            mp.SamplingInterval = cfg.sampling_interval_ms if si is None else si
            mp.QueueSize = it.node.queue_size or cfg.queue_size
            mp.DiscardOldest = True
            req = ua.MonitoredItemCreateRequest()
            req.ItemToMonitor = rv
            req.MonitoringMode = ua.MonitoringMode.Reporting
            req.RequestedParameters = mp
            requests.append(req)
            handles.append(handle)
            # Registered before the request: a notification may arrive before the answer.
            self._by_handle[handle] = it
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = self._sub_id
        params.ItemsToCreate = requests
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        results = await client.uaclient.create_monitored_items(params)
        for it, handle, req, res in zip(wanted, handles, requests, results, strict=True):
            if res.StatusCode.is_good():
                it.status = None
                asked = float(req.RequestedParameters.SamplingInterval)
                revised = float(res.RevisedSamplingInterval)
                if revised != asked:
                    # The server samples at another rate than asked (its minimum, or a
                    # multiple of its own cycle): what the values' spacing really means.
                    self._revised_ms[it.node.channel] = revised
            else:
                del self._by_handle[handle]
                it.status = f"server refused to monitor the node: {res.StatusCode.name}"

    # -- notifications ---------------------------------------------------------------

    def _on_publish(self, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for every publish response (and on loss)."""
        from asyncua import ua

        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        self._last_publish_mono = mono
        msg = result.NotificationMessage
        data = msg.NotificationData
        if not data:
            return  # a keep-alive
        seq = int(msg.SequenceNumber)
        if self._last_seq is not None and seq != self._last_seq + 1 and seq > self._last_seq:
            # Notification messages the server sent that never reached us: a gap.
            self._gap_all(
                f"publish sequence jumped from {self._last_seq} to {seq}: messages missing", now, mono
            )
        self._last_seq = seq
        out = self._pending
        limit = self._limit
        by_handle = self._by_handle
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                for mi in notif.MonitoredItems:
                    it = by_handle.get(mi.ClientHandle)
                    if it is None:
                        continue
                    if len(out) >= limit:
                        self._drop(it.node.channel, now, mono, f"buffer of {limit} readings full")
                        continue
                    out.extend(self._convert(it.node, mi.Value, now, mono))
                    status = mi.Value.StatusCode
                    if status is not None and status.value in _NODE_GONE:
                        self._gone.append(mi.ClientHandle)
            elif isinstance(notif, ua.StatusChangeNotification):
                status = notif.Status
                self._lost = f"subscription status changed to {status.name if status else 'unknown'}"
        self._wake.set()

    def _drop(self, channel: str, now: int, mono: int, why: str) -> None:
        d = self._dropped.get(channel)
        if d is None:
            self._dropped[channel] = [1, now, now, mono, why]
        else:
            d[0] += 1
            d[2], d[3], d[4] = now, mono, why

    def _gap_all(self, why: str, now: int, mono: int) -> None:
        for it in self._items:
            if not it.node.poll:
                self._drop(it.node.channel, now, mono, why)
        log.warning("opcua notifications lost", instrument=self.name, detail=why)

    def _convert(self, node: OpcUaNode, dv: ua.DataValue, now: int, mono: int) -> list[Reading]:
        """One DataValue as a reading (two when the server flags its own queue overflow)."""
        status = dv.StatusCode
        code = status.value if status is not None else 0
        source_ns = _ns(dv.SourceTimestamp)
        server_ns = _ns(dv.ServerTimestamp)
        attrs: dict[str, Any] = {"source_ns": source_ns, "server_ns": server_ns}
        out: list[Reading] = []
        if code & _INFOTYPE_MASK == _INFOTYPE_DATAVALUE and code & _OVERFLOW_BIT:
            out.append(
                self.reading(
                    node.channel, None, node.unit, quality=Quality.BAD, reason=Reason.OVERFLOW,
                    device_ns=source_ns, acq_ns=now, mono_ns=mono,
                    attrs={**attrs, "error": "the server's queue for this node overflowed"},
                )
            )  # fmt: skip
        severity = code >> 30
        if severity >= 2:
            attrs["status"] = f"0x{code:08X}"
            out.append(
                self.reading(
                    node.channel, None, node.unit, quality=Quality.BAD,
                    reason=_status_name(code), device_ns=source_ns, acq_ns=now, mono_ns=mono,
                    attrs=attrs,
                )
            )  # fmt: skip
            return out
        quality, reason = Quality.GOOD, None
        if severity == 1:
            quality, reason = Quality.UNCERTAIN, _status_name(code)
            attrs["status"] = f"0x{code:08X}"
        raw = dv.Value.Value if dv.Value is not None else None
        value: float | None
        if isinstance(raw, bool | int | float):
            value = float(raw)
            if not math.isfinite(value):
                value, quality, reason = None, Quality.BAD, "not_finite"
                attrs["reported"] = repr(raw)
        elif isinstance(raw, str):
            attrs["text"] = raw
            value = node.states.get(raw)
            if value is None:
                quality = Quality.UNCERTAIN if quality is Quality.GOOD else quality
                reason = reason or "unmapped_text"
        else:
            value, quality, reason = None, Quality.BAD, "unsupported_type"
            attrs["reported"] = repr(raw)[:200]
        out.append(
            self.reading(
                node.channel, value, node.unit, quality=quality, reason=reason, device_ns=source_ns,
                acq_ns=now, mono_ns=mono, attrs=attrs,
            )
        )  # fmt: skip
        return out

    # -- read ------------------------------------------------------------------------

    async def read(self) -> list[Reading]:
        """The next batch: notifications, polled values, overflow and unresolved-node records."""
        from asyncua.client.ua_client import UaClientState

        client = self._client
        if client is None:
            raise ConnectError(f"{self.name}: not connected")
        cfg = self.config
        period_ns = int(cfg.period_s * 1e9)
        polled = cfg.mode == "poll" or any(it.node.poll for it in self._items)
        while True:
            lost = self._lost
            if lost is None and client.state is not UaClientState.CONNECTED:
                lost = f"connection to {cfg.url} lost ({client.state.value})"
            if lost is not None:
                if self._pending or self._dropped:
                    return self._take()  # what arrived before the loss first; the error next time
                raise ConnectError(f"{self.name}: {lost}")
            mono = self.clock.monotonic_ns()
            out = self._take()
            for handle in self._gone:
                gone = self._by_handle.pop(handle, None)
                if gone is not None:
                    # The BAD notification is the record; the node is retried like an unresolved one.
                    gone.status = "node left the server's address space"
                    gone.report = False
            if self._gone:
                self._note_unavailable()
            self._gone.clear()
            if polled and mono >= self._next_poll_mono:
                # On a fixed grid from connect: the period does not drift with read time.
                behind = (mono - self._next_poll_mono) // period_ns + 1
                self._next_poll_mono += behind * period_ns
                out.extend(await self._poll(client))
            if mono >= self._next_retry_mono:
                self._next_retry_mono = mono + int(cfg.node_retry_s * 1e9)
                await self._retry(client)
            out.extend(self._unavailable())
            if out:
                return out
            if cfg.mode == "subscribe" and mono - self._last_publish_mono > cfg.stale_after_s * 1e9:
                raise ConnectError(
                    f"{self.name}: no publish response (data or keep-alive) for {cfg.stale_after_s:g} s"
                )
            wait_ns = min(int(cfg.watchdog_s * 1e9), self._next_retry_mono - mono)
            if polled:
                wait_ns = min(wait_ns, self._next_poll_mono - mono)
            self._wake.clear()
            if self._pending or self._dropped or self._lost:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait_ns, 1_000_000) / 1e9):
                    await self._wake.wait()

    def _take(self) -> list[Reading]:
        out, self._pending = self._pending, []
        if self._dropped:
            dropped, self._dropped = self._dropped, {}
            units = dict(self.channels())
            for channel, (count, first, last, last_mono, why) in dropped.items():
                out.append(
                    self.reading(
                        channel, None, units.get(channel, ""), quality=Quality.BAD, reason=Reason.OVERFLOW,
                        acq_ns=last, mono_ns=last_mono,
                        attrs={
                            "dropped": count, "first_dropped_ns": first, "last_dropped_ns": last,
                            "error": f"{count} notification(s) lost: {why}",
                        },
                    )
                )  # fmt: skip
            log.warning("opcua buffer overflow", instrument=self.name, channels=len(dropped))
        return out

    def _note_unavailable(self) -> None:
        """Log a node that became unavailable (or changed why) once, and one that is back."""
        logged = self._logged_unavailable
        back = []
        for it in self._items:
            channel, why = it.node.channel, it.status
            if why is None:
                if logged.pop(channel, None) is not None:
                    back.append(channel)
            elif logged.get(channel) != why:
                logged[channel] = why
                log.warning(
                    "opcua node unavailable",
                    instrument=self.name,
                    channel=channel,
                    node=it.node.node_id or it.node.browse_path,
                    error=why,
                )
        if back:
            log.info("opcua nodes available again", instrument=self.name, channels=back)

    def problems(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        unavailable = {
            it.node.channel: f"{it.node.node_id or it.node.browse_path}: {it.status}"
            for it in self._items
            if it.status is not None
        }
        if unavailable:
            out["unavailable_nodes"] = unavailable
        return out

    def _unavailable(self) -> list[Reading]:
        """One BAD record per unavailable node: at connect, then at each retry that fails."""
        out = []
        for it in self._items:
            if it.report and it.status is not None:
                out.append(
                    self.reading(
                        it.node.channel, None, it.node.unit, quality=Quality.BAD, reason="node_unavailable",
                        attrs={"error": it.status, "node": it.node.node_id or it.node.browse_path},
                    )
                )  # fmt: skip
                it.report = False
        return out

    async def _retry(self, client: Client) -> None:
        from asyncua.ua.uaerrors import UaError

        failed = [it for it in self._items if it.status is not None]
        if not failed:
            return
        try:
            await self._resolve(client, failed)
            if self.config.mode == "subscribe":
                await self._monitor(
                    client, [it for it in failed if not it.node.poll and it.node_id is not None]
                )
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectError(f"{self.name}: retrying nodes failed: {_describe(exc)}") from exc
        self._note_unavailable()

    async def _poll(self, client: Client) -> list[Reading]:
        from asyncua.ua.attribute_ids import AttributeIds
        from asyncua.ua.uaerrors import UaError

        items = [
            it
            for it in self._items
            if (self.config.mode == "poll" or it.node.poll) and it.node_id is not None and it.status is None
        ]
        if not items:
            return []
        try:
            values = await client.uaclient.read_attributes(
                [it.node_id for it in items if it.node_id is not None], AttributeIds.Value
            )
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectError(f"{self.name}: read failed: {_describe(exc)}") from exc
        if len(values) != len(items):
            raise ProtocolError(f"read returned {len(values)} values for {len(items)} nodes")
        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        out: list[Reading] = []
        for it, dv in zip(items, values, strict=True):
            out.extend(self._convert(it.node, dv, now, mono))
        return out

    # -- close -----------------------------------------------------------------------

    async def close(self) -> None:
        client, self._client = self._client, None
        self._info = None
        if client is None:
            return
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await client.disconnect()
        except Exception as exc:
            log.debug("opcua disconnect", instrument=self.name, error=repr(exc))
        finally:
            with contextlib.suppress(Exception):
                client.disconnect_socket()


# -- certificate checks ----------------------------------------------------------------


def _first_cert(der: bytes) -> bytes:
    # A server may send its certificate followed by its chain: keep the leading DER SEQUENCE.
    length = int.from_bytes(der[2:4], "big") + 4 if len(der) > 4 and der[1] == 0x82 else len(der)
    return der[:length]


def _load_dir(directory: Path) -> list[x509.Certificate]:
    from cryptography import x509

    certs = []
    for path in sorted(directory.glob("*")):
        if path.suffix.lower() == ".pem":
            certs.append(x509.load_pem_x509_certificate(path.read_bytes()))
        elif path.suffix.lower() == ".der":
            certs.append(x509.load_der_x509_certificate(path.read_bytes()))
    return certs


def _describe_cert(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (SHA-256 {fingerprint(cert)})"


def _pin_checker(pinned: x509.Certificate, path: str) -> Any:
    pinned_der = _der(pinned)

    async def check(cert: x509.Certificate, _app: Any) -> None:
        if _der(cert) != pinned_der:
            raise ConnectError(
                f"server certificate {_describe_cert(cert)} is not the pinned certificate {path} "
                f"({_describe_cert(pinned)}); refusing to connect"
            )

    return check


async def _trust_checker(directory: Path) -> Any:
    """A check that accepts a certificate listed in ``directory`` or issued by a CA listed there."""
    from asyncua.crypto.truststore import TrustStore

    try:
        trusted = _load_dir(directory)
        store = TrustStore([directory], [])
        await store.load_trust()
    except (OSError, ValueError) as exc:
        raise ConnectError(f"cannot load the trust list {str(directory)!r}: {exc}") from exc
    trusted_der = {_der(c) for c in trusted}

    async def check(cert: x509.Certificate, _app: Any) -> None:
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ConnectError(
                f"server certificate {_describe_cert(cert)} is outside its validity "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
                "refusing to connect"
            )
        if _der(cert) in trusted_der:
            return
        if any(c.subject == cert.issuer for c in trusted) and store.is_trusted(cert):
            return
        raise ConnectError(
            f"server certificate {_describe_cert(cert)} is not trusted: neither it nor its issuer is in "
            f"the trust list {str(directory)!r}; refusing to connect"
        )

    return check


def _status_name(code: int) -> str:
    """The symbolic name of a StatusCode (``BadSensorFailure``), from asyncua's table.

    The low 16 bits (info type, overflow, limit bits) are not part of the name."""
    from asyncua.ua.status_codes import get_name_and_doc

    return str(get_name_and_doc(code & 0xFFFF0000)[0])


def _status_text(exc: UaStatusCodeError) -> str:
    from asyncua import ua

    code = getattr(exc, "code", None)
    if code is None:
        return str(exc)
    sc = ua.StatusCode(code)
    return f"{sc.name}: {sc.doc}" if sc.doc else sc.name


def _describe(exc: BaseException) -> str:
    from asyncua.ua.uaerrors import UaStatusCodeError

    if isinstance(exc, UaStatusCodeError):
        return _status_text(exc)
    return str(exc) or type(exc).__name__
