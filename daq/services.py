"""The composition root of the daemon's services, started around the supervisors (see
:mod:`daq.daemon`).

:func:`build_services` is the one place that knows every service and what each is given: a
:class:`~daq.context.ServiceContext` for the common parts, and, where one service needs
another, that one's narrow interface (the API gets the run operations as
:class:`~daq.context.RunControl` and the loader's config in force for a run; the run manager
gets the clock monitor's sync state). Feature modules are imported here lazily so a daemon
without a feature does not pay for it. To add a part of the daemon, build it here and append
it to the list.
"""

from __future__ import annotations

import os

from daq.configfile.snapshot import run_config
from daq.context import Service, ServiceContext


def build_services(ctx: ServiceContext) -> list[Service]:
    """Every service this config asks for, in the order they are started within a phase."""
    from daq.alarms.service import service as alarms_service
    from daq.runs.clock import ClockMonitor
    from daq.runs.manager import build as runs_service

    services: list[Service] = [alarms_service(ctx)]
    clock = ClockMonitor(
        ctx.config.model.clock, clock=ctx.clock, journal=ctx.journal, tasks=ctx.tasks, flag=ctx.clock_flag
    )
    services.append(clock)
    runs = runs_service(ctx, clock_sync=lambda: clock.sync)
    services.append(runs)
    # The board shows the open run.
    ctx.status.runs = runs
    # Only under a service manager (or a test standing in for one) that set NOTIFY_SOCKET.
    if os.environ.get("NOTIFY_SOCKET"):
        from daq.systemd import service as systemd_service

        notifier = systemd_service(ctx)
        if notifier is not None:
            services.append(notifier)
    if any(sink.enabled for sink in ctx.config.model.sinks):  # the HTTP stack only to forward
        from daq.forward.service import service as forward_service

        forward = forward_service(ctx)
        if forward is not None:
            services.append(forward)
    from daq.tlc.service import service as tlc_service

    tlc = tlc_service(ctx)
    if tlc is not None:
        services.append(tlc)
    if ctx.config.model.api.enabled:  # the HTTP stack is loaded only to serve the API
        from daq.api.server import build_service as api_service

        api = api_service(ctx, runs=runs, run_config=run_config, alarms=ctx.alarms)
        if api is not None:
            services.append(api)
    return services
