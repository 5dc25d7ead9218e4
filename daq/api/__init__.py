"""The daemon's local interface: a live stream, status, metrics, run control and a live page.

- :mod:`daq.api.config`: the ``[api]`` config section (loopback only unless told otherwise).
- :mod:`daq.api.server`: the daemon service ``"api"`` (phase 1): binds, serves, stops.
- :mod:`daq.api.app`: the aiohttp application (status, readings, stream, metrics routes).
- :mod:`daq.api.control`: the run control routes (each calls one named run operation).
- :mod:`daq.api.guard`: Host/Origin checks and the ranges of numbers a request may carry.
- :mod:`daq.api.listener`: the accept loop with its connection cap and timeouts.
- :mod:`daq.api.live`: one live client (a bounded subscription, replay and gaps from the journal,
  stalled clients dropped), shared by the readings' and the alarm transitions' streams.
- :mod:`daq.api.stream`: the live readings' stream and the journal queries of ``/api/readings``.
- :mod:`daq.api.metrics`: Prometheus text exposition and the event-loop lag sampler.
- :mod:`daq.api.auth`: the bearer-token check of the control endpoints.
- :mod:`daq.api.filters`: reading filters and durations shared with ``daq tail``.
- :mod:`daq.api.client`: what the command line uses to talk to a running daemon.

This package imports nothing heavy at import time: the config loader imports
:mod:`daq.api.config`.
"""
