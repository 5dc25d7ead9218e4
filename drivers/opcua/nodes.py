"""The node map at run time: each node's NodeId (browse paths translated on every connect),
whether it is acquired, and what the server says about itself.

A node that does not resolve, or whose monitored item the server refuses, gets one BAD
``node_unavailable`` record when that starts and at each retry that fails, is logged once
(not at every retry or reconnect) and is listed in status until it is acquired again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from daq.model import DeviceInfo, Quality, Reading
from drivers.opcua.config import OpcUaConfig, OpcUaNode

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client

log: structlog.stdlib.BoundLogger = structlog.get_logger("drivers.opcua")


class Item:
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

    @property
    def where(self) -> str | None:
        """The node as configured: its NodeId or browse path."""
        return self.node.node_id or self.node.browse_path


async def resolve(client: Client, items: list[Item]) -> None:
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


async def device_info(client: Client, config: OpcUaConfig) -> DeviceInfo:
    """The server's maker, product, version and build (its ServerStatus BuildInfo)."""
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
    texts = [str(v.Value.Value) if v.Value is not None and v.Value.Value is not None else "" for v in values]
    maker, product, version, build = texts
    return DeviceInfo(
        model=" ".join(t for t in (maker, product) if t) or "OPC UA server",
        firmware=" ".join(t for t in (version, build) if t) or None,
        extra={"url": config.url, "security": config.security.mode},
    )


class Availability:
    """Which nodes are unavailable and why: logged once, recorded, listed in status."""

    def __init__(self, instrument: str, items: list[Item]):
        self.instrument = instrument
        self.items = items
        #: channel -> why it is unavailable, as last logged (kept across reconnects: logged once).
        self._logged: dict[str, str] = {}

    def note(self) -> None:
        """Log a node that became unavailable (or changed why) once, and one that is back."""
        logged = self._logged
        back = []
        for it in self.items:
            channel, why = it.node.channel, it.status
            if why is None:
                if logged.pop(channel, None) is not None:
                    back.append(channel)
            elif logged.get(channel) != why:
                logged[channel] = why
                log.warning(
                    "opcua node unavailable",
                    instrument=self.instrument,
                    channel=channel,
                    node=it.where,
                    error=why,
                )
        if back:
            log.info("opcua nodes available again", instrument=self.instrument, channels=back)

    def records(self, reading: Callable[..., Reading]) -> list[Reading]:
        """One BAD record per unavailable node not yet reported: at connect, then at each
        retry that fails."""
        out = []
        for it in self.items:
            if it.report and it.status is not None:
                out.append(
                    reading(
                        it.node.channel, None, it.node.unit, quality=Quality.BAD, reason="node_unavailable",
                        attrs={"error": it.status, "node": it.where},
                    )
                )  # fmt: skip
                it.report = False
        return out

    def problems(self) -> dict[str, dict[str, Any]]:
        unavailable = {
            it.node.channel: f"{it.where}: {it.status}" for it in self.items if it.status is not None
        }
        return {"unavailable_nodes": unavailable} if unavailable else {}
