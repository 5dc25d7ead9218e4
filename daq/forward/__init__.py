"""Forwarding the journal to time-series databases (store and forward).

* :mod:`daq.forward.config`: the ``[[sinks]]`` config models (imported by the config loader);
* :mod:`daq.forward.lineprotocol`: line protocol formatting and escaping;
* :mod:`daq.forward.outbox`: a sink's reader of the journal (batches after its cursor);
* :mod:`daq.forward.writer`: one write request, answered by one typed outcome;
* :mod:`daq.forward.policy`: what an outcome means (retry, bisect, quarantine, alarm);
* :mod:`daq.forward.status`: a sink's figures, alarms and status file;
* :mod:`daq.forward.forwarder`: the loop of one sink's forwarder, composing those parts;
* :mod:`daq.forward.service`: the daemon service factory :func:`daq.forward.service.service`;
* :mod:`daq.forward.naming` and :mod:`daq.forward.cursors`: config checks of names, and
  ``daq sinks`` maintenance of a stopped daemon's cursors.

Nothing is imported here, so that the config loader can import the config models without
pulling in the journal and the HTTP client.
"""
