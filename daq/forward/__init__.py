"""Forwarding the journal to time-series databases (store and forward).

* :mod:`daq.forward.config`: the ``[[sinks]]`` config models (imported by the config loader);
* :mod:`daq.forward.lineprotocol`: line protocol formatting and escaping;
* :mod:`daq.forward.forwarder`: one forwarder per sink, and the daemon service factory
  :func:`daq.forward.forwarder.service`.

Nothing is imported here, so that the config loader can import the config models without
pulling in the journal and the HTTP client.
"""
