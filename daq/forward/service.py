"""The daemon's forwarding service: one :class:`~daq.forward.forwarder.InfluxForwarder` per
enabled sink, built from the configuration.

Contract: :func:`service` is the service factory the composition root calls (``None`` when no
sink is enabled); it resolves every sink's token before anything starts, so a missing
credential stops the daemon at start with the sink named. :class:`ForwardService` starts the
forwarders (stopping those started if one fails) and stops them with their final drains side
by side.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from daq.forward.config import InfluxSink
from daq.forward.forwarder import InfluxForwarder
from daq.secrets import resolve_secret

if TYPE_CHECKING:
    from daq.context import ServiceContext


def sink_token(sink: InfluxSink, index: int) -> str | None:
    """The sink's token from its credential or environment variable (``None`` if it has none)."""
    if not sink.token_env and not sink.token_credential:
        return None
    return resolve_secret(sink.token_env, sink.token_credential, f"sinks[{index}] ({sink.name}) token")


class ForwardService:
    """The daemon service running one :class:`InfluxForwarder` per enabled sink."""

    name = "forward"
    phase = 1
    #: The daemon stops this service after the supervisors' last readings are committed, so
    #: the final drain (:meth:`InfluxForwarder.stop`) sends them.
    drains_on_stop = True

    def __init__(self, forwarders: list[InfluxForwarder]):
        self.forwarders = forwarders

    async def start(self) -> None:
        started: list[InfluxForwarder] = []
        try:
            for fwd in self.forwarders:
                await fwd.start()
                started.append(fwd)
        except BaseException:
            for fwd in reversed(started):
                await fwd.stop()
            raise

    async def stop(self, drain_s: float | None = None) -> None:
        """Stop every forwarder; their final drains run side by side within ``drain_s``."""
        await asyncio.gather(*(fwd.stop(drain_s) for fwd in self.forwarders))

    def status(self) -> dict[str, Any]:
        return {"sinks": {fwd.sink.name: fwd.status() for fwd in self.forwarders}}


def service(ctx: ServiceContext) -> ForwardService | None:
    """The daemon's service factory: ``None`` without enabled sinks. Raises ConfigError when
    a sink's token cannot be found (before anything starts)."""
    cfg = ctx.config
    sinks = [(i, s) for i, s in enumerate(getattr(cfg.model, "sinks", [])) if s.enabled]
    if not sinks:
        return None
    kinds = {inst.name: inst.kind for inst in cfg.instruments}
    forwarders = [
        InfluxForwarder(
            sink,
            ctx.journal,
            site=cfg.daemon.site,
            cell=cfg.daemon.cell,
            kinds=kinds,
            clock=ctx.clock,
            token=sink_token(sink, i),
            rng=ctx.rng,
            tasks=ctx.tasks,
        )
        for i, sink in sinks
    ]
    return ForwardService(forwarders)
