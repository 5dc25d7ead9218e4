"""OPC UA client for synthesizer and hot-cell PLCs, driven by a node map declared in config.

Each ``[[instruments.nodes]]`` entry maps one channel to a node, by NodeId
(``ns=2;s=Synth.reactor_temp``) or by a browse path relative to the Objects folder
(``/2:Synth/2:reactor_temp``). Browse paths are translated on every connect, so a server
that renumbers its namespaces after a restart is followed.

Acquisition is by subscription (subscribe, don't poll: docs/fieldbus.md, OPC UA "Acquisition"):
one subscription per connection with the map's publishing interval, one monitored item per node with its
sampling interval and server-side queue size. Nodes marked ``poll = true`` (or the whole
instrument with ``mode = "poll"``) are read in one Read call per ``period_s`` instead.

The driver does not use asyncua's ``Subscription`` class: its iterator queue silently drops
the oldest notifications when full. The driver registers its own publish callback, which
turns each notification into a :class:`~daq.model.Reading` stamped on arrival and keeps
them in a buffer of ``max_pending`` readings (sized from the map). What does not fit is
counted per channel and returned as an explicit BAD ``overflow`` reading, as are gaps in
the subscription's sequence numbers and the server's own overflow bit.

Quality follows the StatusCode of each value: Good -> GOOD, Uncertain -> UNCERTAIN (value
kept), Bad -> BAD with the status name as reason and no value (never the last good one).
Source and server timestamps go to ``attrs`` (``source_ns``, ``server_ns``); the source
timestamp is also ``device_ns``. A node that does not resolve, or whose monitored item the
server refuses, gives a BAD reading and is retried every ``node_retry_s``; the others keep
streaming. Such a node is logged once (not at every retry or reconnect) and listed by
:meth:`OpcUaDriver.problems` until it is acquired again. A sampling interval the server
revised is recorded in the device information (``revised_sampling_ms``, per channel).

Loss of the server is detected by asyncua's watchdog (a ServerState read every
``watchdog_s``) and by the socket closing, after which ``read()`` raises
:class:`~daq.errors.ConnectError`, and by the subscription's keep-alives stopping for
``stale_after_s``, which the supervisor times (the driver declares it as its silence limit).
The supervisor records the gap and reconnects; it also runs the node retries and the reads of
``poll = true`` nodes as the driver's duties. The driver keeps no timer and never reconnects.

Security: ``None``, ``Sign`` or ``SignAndEncrypt`` with ``Basic256Sha256`` or
``Aes256_Sha256_RsaPss``; the client certificate and key come from files; the server
certificate is either pinned (``server_certificate_file``) or must be in, or issued by a CA
in, ``trust_list_dir``. The endpoint with exactly the configured policy and mode is used
or the connection fails: there is no fallback to a weaker one. User name and password come
from an environment variable or a systemd credential, never from the config file.

The package: :mod:`.config` (the instrument table), :mod:`.security` (endpoint, certificate
checks, password), :mod:`.link` (the connection, asyncua's socket or one a test makes in
memory), :mod:`.nodes` (the node map at run time: resolution, availability, device
information), :mod:`.subscription` (monitored items and the notification buffer),
:mod:`.conversion` (DataValue to readings), :mod:`.errors` (asyncua's errors mapped in one
place) and :mod:`.driver`.
"""

from __future__ import annotations

from drivers.opcua.config import OpcUaConfig, OpcUaNode, OpcUaSecurity
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.security import fingerprint

__all__ = ["OpcUaConfig", "OpcUaDriver", "OpcUaNode", "OpcUaSecurity", "fingerprint"]
