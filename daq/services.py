"""The daemon's optional parts, started around the supervisors (see :mod:`daq.daemon`).

Each factory takes the daemon and returns a service, or ``None`` when the config does not
ask for it. Factories import their modules lazily so a daemon without a feature does not
pay for it. To add a part of the daemon, add its factory to :data:`FACTORIES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daq.daemon import Daemon, Service

ServiceFactory = Callable[["Daemon"], "Service | None"]


def _systemd(daemon: Daemon) -> Service | None:
    # Only under a service manager (or a test standing in for one) that set NOTIFY_SOCKET.
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    from daq.systemd import service

    return service(daemon)


def _forward(daemon: Daemon) -> Service | None:
    from daq.forward.forwarder import service

    return service(daemon)


def _tlc(daemon: Daemon) -> Service | None:
    from daq.tlc.service import service

    return service(daemon)


def _runs(daemon: Daemon) -> Service | None:
    from daq.runs.manager import build

    return build(daemon)


def _clock(daemon: Daemon) -> Service | None:
    from daq.runs.clock import ClockMonitor
    from daq.runs.settings import ClockSection

    return ClockMonitor(daemon, getattr(daemon.config.model, "clock", None) or ClockSection())


def _api(daemon: Daemon) -> Service | None:
    from daq.api.server import build_service

    return build_service(daemon)


FACTORIES: list[ServiceFactory] = [_clock, _runs, _systemd, _forward, _tlc, _api]


def build_services(daemon: Daemon) -> list[Service]:
    services = []
    for factory in FACTORIES:
        svc = factory(daemon)
        if svc is not None:
            services.append(svc)
    return services
