"""The OPC UA driver: connect, subscribe or poll, and hand the supervisor what arrived.

The node map at run time is :mod:`.nodes`, the subscription and its buffer
:mod:`.subscription`; configuration, security, conversion, the link and error mapping live
beside it. It keeps no timer: the supervisor times the subscription's silence and runs the
node retries and the reads of ``poll = true`` nodes as duties.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import structlog

from daq.clock import Clock
from daq.errors import ConnectError, ProtocolError
from daq.model import DeviceInfo, Reading
from drivers.base import Capability, Deadline, Driver, Duty
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.conversion import convert
from drivers.opcua.errors import map_exceptions, status_text
from drivers.opcua.link import OpcUaLinkFactory, make_client
from drivers.opcua.nodes import Availability, Item, device_info, resolve
from drivers.opcua.security import password, secure
from drivers.opcua.subscription import Notifications

if TYPE_CHECKING:
    from asyncua.client.client import Client

# structlog directly: daq.logs reaches daq.daemon (via daq.systemd), which drivers may not import.
log: structlog.stdlib.BoundLogger = structlog.get_logger("drivers.opcua")


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
        self._items = [Item(n) for n in config.nodes]
        self.availability = Availability(self.name, self._items)
        #: The subscription of the current connection and what it delivered (subscribe mode).
        self.notifications = Notifications(self.name, config, clock, self.reading)

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
                self.notifications.connection_lost(f"connection to {cfg.url} lost ({exc!r})")

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
        info = await device_info(client, cfg)
        await resolve(client, self._items)
        notifications = self.notifications
        if cfg.mode == "subscribe":
            await notifications.create(client)
        if notifications.revised_ms:
            info = dataclasses.replace(
                info, extra={**info.extra, "revised_sampling_ms": dict(notifications.revised_ms)}
            )
        self._info = info
        self.availability.note()

    def _reset_state(self) -> None:
        self.notifications.reset(self._items)
        for item in self._items:
            item.node_id = None
            item.status = None

    # -- notifications ---------------------------------------------------------------

    # -- read ------------------------------------------------------------------------

    def problems(self) -> dict[str, dict[str, Any]]:
        return self.availability.problems()

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
            out.extend(self.availability.records(self.reading))
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
        return self.availability.records(self.reading)

    async def _poll_duty(self, deadline: Deadline) -> list[Reading]:
        return await self._poll(self._connected())

    async def _next_batch(self) -> list[Reading]:
        from asyncua.client.ua_client import UaClientState

        while True:
            client = self._client
            if client is None:
                raise ConnectError(f"{self.name}: not connected")
            n = self.notifications
            lost = n.lost
            if lost is None and client.state is not UaClientState.CONNECTED:
                lost = f"connection to {self.config.url} lost ({client.state.value})"
            if lost is not None:
                if n.pending or n.dropped:
                    return n.take()  # what arrived before the loss first; the error next time
                raise ConnectError(f"{self.name}: {lost}")
            out = n.take()
            for handle in n.gone:
                gone = n.by_handle.pop(handle, None)
                if gone is not None:
                    # The BAD notification is the record; the node is retried like an unresolved one.
                    gone.status = "node left the server's address space"
                    gone.report = False
            if n.gone:
                self.availability.note()
            n.gone.clear()
            out.extend(self.availability.records(self.reading))
            heard, n.heard = n.heard, False
            if out or heard:
                return out
            n.wake.clear()
            # Cancelled by the supervisor when a duty is due or the silence limit passes:
            # nothing is lost, the buffer is read by the next call.
            await n.wake.wait()

    async def _retry(self, client: Client) -> None:
        failed = [it for it in self._items if it.status is not None]
        if not failed:
            return
        with map_exceptions(f"{self.name}: retrying nodes failed"):
            await resolve(client, failed)
            if self.config.mode == "subscribe":
                await self.notifications.monitor(
                    client, [it for it in failed if not it.node.poll and it.node_id is not None]
                )
        self.availability.note()

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
