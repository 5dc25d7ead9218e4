"""The OPC UA driver: connect, subscribe or poll, and turn values into readings.

The longest module of the package (about 530 lines, over the usual 400): it holds the
driver's run-time state (the node map's items, the reading buffer, the subscription's
sequence), which every part of it reads and writes; configuration, security, conversion and
error mapping live beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import structlog

from daq.clock import Clock
from daq.errors import ConnectError, ProtocolError
from daq.model import DeviceInfo, Quality, Reading, Reason
from drivers.base import Capability, Deadline, Driver, Duty
from drivers.opcua.config import OpcUaConfig, OpcUaNode
from drivers.opcua.conversion import NODE_GONE, convert
from drivers.opcua.errors import map_exceptions, status_text
from drivers.opcua.link import OpcUaLinkFactory, make_client
from drivers.opcua.security import password, secure

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client

# structlog directly: daq.logs reaches daq.daemon (via daq.systemd), which drivers may not import.
log: structlog.stdlib.BoundLogger = structlog.get_logger("drivers.opcua")


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
    """Subscription by default; with ``mode = "poll"`` a polled driver like any other: the
    supervisor's grid, deadline, timeouts and lateness apply to it, and it keeps no timer."""

    kind = "opcua"
    config_model = OpcUaConfig
    config: OpcUaConfig

    def __init__(self, config: OpcUaConfig, clock: Clock, *, link_factory: OpcUaLinkFactory | None = None):
        super().__init__(config, clock)
        #: Opens the connection (asyncua's own socket when ``None``); a test joins it in memory.
        self.link_factory = link_factory
        self.capability = Capability.POLLED if config.mode == "poll" else Capability.SUBSCRIPTION
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
        #: A publish response (data or keep-alive) arrived since the last read returned.
        self._heard = False
        self._next_handle = 1
        #: channel -> why it is unavailable, as last logged (kept across reconnects: logged once).
        self._logged_unavailable: dict[str, str] = {}
        #: channel -> the sampling interval (ms) the server revised the requested one to.
        self._revised_ms: dict[str, float] = {}

    def channels(self) -> list[tuple[str, str]]:
        return [(n.channel, n.unit) for n in self.config.nodes]

    # -- connect ---------------------------------------------------------------------

    async def connect(self) -> DeviceInfo:
        if self._client is not None and self._info is not None:
            return self._info
        cfg = self.config
        client = make_client(cfg.url, cfg.request_timeout_s, cfg.watchdog_s, self.link_factory)
        client.application_uri = cfg.security.application_uri
        client.name = client.description = f"hotcell-daq {self.name}"
        client.product_uri = "urn:hotcell-daq"
        # One minute rather than asyncua's hour: a session abandoned by a crashed daemon is
        # cleaned up by the server soon, and servers rarely allow more than ten minutes.
        client.session_timeout = 60_000

        # asyncua's own watchdog (a ServerState read every watchdog_s) and the socket closing
        # end here: the waiting read() raises, and the supervisor records the gap.
        async def on_lost(exc: Exception) -> None:
            if self._client is client:
                self._lost = f"connection to {cfg.url} lost ({exc!r})"
                self._wake.set()

        client.connection_lost_callback = on_lost
        self._client = client
        self._reset_state()
        try:
            with map_exceptions(f"{self.name}: cannot connect to {cfg.url}"):
                await self._open(client)
        except ConnectError:
            await self.close()
            raise
        assert self._info is not None
        return self._info

    async def _open(self, client: Client) -> None:
        """Secure, open the session, read the device information, resolve and subscribe."""
        from asyncua.ua.uaerrors import UaStatusCodeError

        cfg = self.config
        await secure(client, cfg.security, cfg.url, self.name)
        if cfg.username:
            client.set_user(cfg.username)
            secret = password(cfg.password_env, cfg.password_credential, self.name)
            if secret is not None:
                client.set_password(secret)
        try:
            await client.connect()
        except UaStatusCodeError as exc:
            raise ConnectError(f"{self.name}: server refused the session: {status_text(exc)}") from exc
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

    def _reset_state(self) -> None:
        self._by_handle.clear()
        self._gone = []
        self._pending = []
        self._wake = asyncio.Event()
        self._lost = None
        self._heard = False
        self._sub_id = None
        self._last_seq = None
        self._revised_ms = {}
        for item in self._items:
            item.node_id = None
            item.status = None

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
        self._heard = True
        msg = result.NotificationMessage
        data = msg.NotificationData
        if not data:
            self._wake.set()  # a keep-alive: the server is there (the supervisor times silence)
            return
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
                    out.extend(convert(it.node, mi.Value, now, mono, self.reading))
                    status = mi.Value.StatusCode
                    if status is not None and status.value in NODE_GONE:
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

    # -- read ------------------------------------------------------------------------

    def silence_limit_s(self) -> float | None:
        """Subscribe mode: a publish response (data or keep-alive) is due every ``keepalive_s``
        at the latest; none for ``stale_after_s`` means the link is lost."""
        return self.config.stale_after_s if self.capability is Capability.SUBSCRIPTION else None

    def silenced(self, silent_s: float) -> str:
        return f"{self.name}: no publish response (data or keep-alive) for {silent_s:g} s"

    def duties(self) -> list[Duty]:
        """Nodes that did not resolve (or were removed) are resolved again every
        ``node_retry_s``; in subscribe mode, ``poll = true`` nodes are read every ``period_s``."""
        cfg = self.config
        retry_s = cfg.node_retry_s
        out = [Duty("retry unavailable nodes", retry_s, 2 * cfg.request_timeout_s, self._retry_duty, retry_s)]
        if cfg.mode == "subscribe" and any(it.node.poll for it in self._items):
            out.append(Duty("read polled nodes", cfg.period_s, cfg.timeout_s, self._poll_duty))
        return out

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        """Poll mode: one Read of every node (the supervisor's timeout bounds it). Subscribe
        mode: the next batch of notifications, overflow and unavailable-node records, or
        ``[]`` after a keep-alive; it waits without a timer of its own."""
        if self.capability is Capability.POLLED:
            out = await self._poll(self._connected())
            out.extend(self._unavailable())
            return out
        return await self._next_batch()

    def _connected(self) -> Client:
        from asyncua.client.ua_client import UaClientState

        client = self._client
        if client is None:
            raise ConnectError(f"{self.name}: not connected")
        if client.state is not UaClientState.CONNECTED:
            raise ConnectError(f"{self.name}: connection to {self.config.url} lost ({client.state.value})")
        return client

    async def _retry_duty(self, deadline: Deadline) -> list[Reading]:
        await self._retry(self._connected())
        return self._unavailable()

    async def _poll_duty(self, deadline: Deadline) -> list[Reading]:
        return await self._poll(self._connected())

    async def _next_batch(self) -> list[Reading]:
        from asyncua.client.ua_client import UaClientState

        while True:
            client = self._client
            if client is None:
                raise ConnectError(f"{self.name}: not connected")
            lost = self._lost
            if lost is None and client.state is not UaClientState.CONNECTED:
                lost = f"connection to {self.config.url} lost ({client.state.value})"
            if lost is not None:
                if self._pending or self._dropped:
                    return self._take()  # what arrived before the loss first; the error next time
                raise ConnectError(f"{self.name}: {lost}")
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
            out.extend(self._unavailable())
            heard, self._heard = self._heard, False
            if out or heard:
                return out
            self._wake.clear()
            # Cancelled by the supervisor when a duty is due or the silence limit passes:
            # nothing is lost, the buffer is read by the next call.
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
        failed = [it for it in self._items if it.status is not None]
        if not failed:
            return
        with map_exceptions(f"{self.name}: retrying nodes failed"):
            await self._resolve(client, failed)
            if self.config.mode == "subscribe":
                await self._monitor(
                    client, [it for it in failed if not it.node.poll and it.node_id is not None]
                )
        self._note_unavailable()

    async def _poll(self, client: Client) -> list[Reading]:
        from asyncua.ua.attribute_ids import AttributeIds

        items = [
            it
            for it in self._items
            if (self.config.mode == "poll" or it.node.poll) and it.node_id is not None and it.status is None
        ]
        if not items:
            return []
        with map_exceptions(f"{self.name}: read failed"):
            values = await client.uaclient.read_attributes(
                [it.node_id for it in items if it.node_id is not None], AttributeIds.Value
            )
        if len(values) != len(items):
            raise ProtocolError(f"read returned {len(values)} values for {len(items)} nodes")
        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        out: list[Reading] = []
        for it, dv in zip(items, values, strict=True):
            out.extend(convert(it.node, dv, now, mono, self.reading))
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
