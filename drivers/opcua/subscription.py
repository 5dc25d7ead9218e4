"""The subscription of an OPC UA connection: one monitored item per node, and the buffer its
publish responses fill.

asyncua's ``Subscription`` class is not used: its iterator queue silently drops the oldest
notifications when full. :class:`Notifications` registers its own publish callback, turns
each notification into a reading stamped on arrival and keeps at most ``limit`` of them;
what does not fit is counted per channel and returned as one BAD ``overflow`` record, as are
gaps in the subscription's sequence numbers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from daq.clock import Clock
from daq.model import Quality, Reading, Reason
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.conversion import NODE_GONE, convert
from drivers.opcua.nodes import Item

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client

log: structlog.stdlib.BoundLogger = structlog.get_logger("drivers.opcua")


class Notifications:
    """The subscription of the current connection and the readings it delivered, until read."""

    def __init__(self, instrument: str, config: OpcUaConfig, clock: Clock, reading: Callable[..., Reading]):
        self.instrument = instrument
        self.config = config
        self.clock = clock
        self.reading = reading
        self.limit = config.pending_limit()
        #: channel -> [count, first ns, last ns, last monotonic ns, why]; kept across reconnects.
        self.dropped: dict[str, list[Any]] = {}
        self._next_handle = 1
        self._connection = 0
        self.reset([])

    def reset(self, items: list[Item]) -> None:
        """Start afresh for a new connection acquiring ``items``."""
        self._connection += 1
        self.items = items
        self.by_handle: dict[int, Item] = {}
        #: Handles of monitored items whose node left the server's address space.
        self.gone: list[int] = []
        self.pending: list[Reading] = []
        self.wake = asyncio.Event()
        #: Why the connection is lost, once it is.
        self.lost: str | None = None
        #: A publish response (data or keep-alive) arrived since the last read returned.
        self.heard = False
        self.sub_id: int | None = None
        self.last_seq: int | None = None
        #: channel -> the sampling interval (ms) the server revised the requested one to.
        self.revised_ms: dict[str, float] = {}

    def connection_lost(self, why: str) -> None:
        self.lost = why
        self.wake.set()

    async def create(self, client: Client) -> None:
        """Create the subscription and monitor every node not read by polling."""
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
        connection = self._connection

        # Bound to this connection: a late callback from a client already closed is ignored.
        def on_publish(result: ua.PublishResult) -> None:
            if self._connection == connection:
                self.on_publish(result)

        result = await client.uaclient.create_subscription(params, on_publish)
        self.sub_id = result.SubscriptionId
        await self.monitor(client, [it for it in self.items if not it.node.poll])

    async def monitor(self, client: Client, items: list[Item]) -> None:
        """Create one monitored item per resolved node; a refusal marks only that node."""
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds

        cfg = self.config
        wanted = [it for it in items if it.node_id is not None]
        if not wanted or self.sub_id is None:
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
            self.by_handle[handle] = it
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = self.sub_id
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
                    self.revised_ms[it.node.channel] = revised
            else:
                del self.by_handle[handle]
                it.status = f"server refused to monitor the node: {res.StatusCode.name}"

    def on_publish(self, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for every publish response (and on loss)."""
        from asyncua import ua

        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        self.heard = True
        msg = result.NotificationMessage
        data = msg.NotificationData
        if not data:
            self.wake.set()  # a keep-alive: the server is there (the supervisor times silence)
            return
        seq = int(msg.SequenceNumber)
        if self.last_seq is not None and seq != self.last_seq + 1 and seq > self.last_seq:
            # Notification messages the server sent that never reached us: a gap.
            self._gap_all(
                f"publish sequence jumped from {self.last_seq} to {seq}: messages missing", now, mono
            )
        self.last_seq = seq
        out = self.pending
        limit = self.limit
        by_handle = self.by_handle
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
                        self.gone.append(mi.ClientHandle)
            elif isinstance(notif, ua.StatusChangeNotification):
                status = notif.Status
                self.lost = f"subscription status changed to {status.name if status else 'unknown'}"
        self.wake.set()

    def _drop(self, channel: str, now: int, mono: int, why: str) -> None:
        d = self.dropped.get(channel)
        if d is None:
            self.dropped[channel] = [1, now, now, mono, why]
        else:
            d[0] += 1
            d[2], d[3], d[4] = now, mono, why

    def _gap_all(self, why: str, now: int, mono: int) -> None:
        for it in self.items:
            if not it.node.poll:
                self._drop(it.node.channel, now, mono, why)
        log.warning("opcua notifications lost", instrument=self.instrument, detail=why)

    def take(self) -> list[Reading]:
        """The readings delivered so far, then one BAD ``overflow`` record per channel that
        lost notifications (with the count and the first and last lost times)."""
        out, self.pending = self.pending, []
        if self.dropped:
            dropped, self.dropped = self.dropped, {}
            units = {n.channel: n.unit for n in self.config.nodes}
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
            log.warning("opcua buffer overflow", instrument=self.instrument, channels=len(dropped))
        return out
