"""The synthesis process model served by a real asyncua OPC UA server.

``daq simulate synth-opcua --listen opc.tcp://127.0.0.1:PORT`` (port 0 picks a free one).
Every channel of :class:`~simulators.synthesis.SynthesisProcess` is a variable under the
object ``Synth`` in namespace ``urn:hotcell-daq:synthesis`` (index 2), with the NodeId
``ns=2;s=Synth.<channel>`` and the browse name ``2:<channel>``: Double for analog values,
Int32 for the step number, Boolean for valves, alarms and flags, String for the step name.
``config/synth-opcua-map.toml`` is the matching node map. Values are written every
``update_s`` (only those that changed, with the source timestamp of the change), so a
subscription sees each change once.

Options (``--set KEY=VALUE``):

====================  =========================================================================
``nuclide``           nuclide of the batch (default ``Lu-177``)
``activity_mbq``      activity at the start of each run (default 15000)
``time_scale``        process seconds per wall second (default 1; the demo uses ~8)
``idle_s``            idle time between runs, process seconds (default 30)
``extra_channels``    auxiliary analog channels ``aux_001``... (default 0; 77 gives 100 channels)
``update_s``          seconds between updates of the variables (default 0.1)
``certificate``       server certificate (DER or PEM) for secure endpoints
``private_key``       its private key (PEM)
``security``          comma list of endpoints: ``None``, ``Basic256Sha256_Sign``,
                      ``Basic256Sha256_SignAndEncrypt``, ``Aes256Sha256RsaPss_Sign``,
                      ``Aes256Sha256RsaPss_SignAndEncrypt`` (default: ``None`` without a
                      certificate, all four secure ones with one)
``users``             ``NAME:ENV`` pairs (comma list): accept user NAME with the password in
                      ``$ENV``; anonymous access is then refused
====================  =========================================================================

Faults (``--fault NAME=VALUE``): ``freeze`` (1 = values stop changing), ``delay_s`` (every
response is held back this long, through a relay in front of the server),
``restart_every_s`` (the server drops every connection and stops listening for
``restart_down_s``, default 2 s), ``bad_status`` (probability per update and node of a
``BadSensorFailure`` value that still carries the last value, as a PLC does),
``remove_every_s`` (one node is deleted, then re-added after half that time). Tests drive
the same faults directly: :meth:`SynthOpcUaSimulator.restart`, :meth:`set_status`,
:meth:`remove_node`, :meth:`restore_node`.

Building OPC UA's standard address space costs asyncua about 2.5 s of CPU per server. With
``DAQ_SIM_CACHE`` set to a directory, the first server stores that address space there (one
shelf per asyncua version, one builder at a time, published by an atomic rename so parallel
starts never see half of one) and every later server loads it lazily in about 0.2 s; the test
suite and ``make demo`` set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

from simulators.base import Listener, Simulator, SimulatorError, float_option
from simulators.relay import DelayRelay, free_port
from simulators.synthesis import ChannelSpec, SynthesisProcess

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.common.node import Node
    from asyncua.crypto.permission_rules import User
    from asyncua.server.server import Server
    from asyncua.server.user_managers import UserManager

NAMESPACE = "urn:hotcell-daq:synthesis"

#: Endpoint names accepted by the ``security`` option (asyncua's SecurityPolicyType names).
_ENDPOINTS = (
    "None",
    "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt",
    "Aes256Sha256RsaPss_Sign",
    "Aes256Sha256RsaPss_SignAndEncrypt",
)


def _variant(kind: str) -> ua.VariantType:
    from asyncua import ua

    types = {
        "float": ua.VariantType.Double,
        "int": ua.VariantType.Int32,
        "bool": ua.VariantType.Boolean,
        "str": ua.VariantType.String,
    }
    return types[kind]


def _endpoint(name: str) -> ua.SecurityPolicyType:
    from asyncua import ua

    return getattr(ua.SecurityPolicyType, "NoSecurity" if name == "None" else name)  # type: ignore[no-any-return]


def node_id(channel: str) -> str:
    """The NodeId string of a channel's variable (namespace index 2)."""
    return f"ns=2;s=Synth.{channel}"


CACHE_ENV = "DAQ_SIM_CACHE"


async def _init_standard_address_space(server: Server) -> None:
    """``server.init()``, from the shelf under ``$DAQ_SIM_CACHE`` when there is one.

    Without the variable, or when its directory cannot be made, the address space is built in
    memory, as asyncua does by default.
    """
    cache = os.environ.get(CACHE_ENV)
    if not cache:
        await server.init()
        return
    try:
        shelf = _published_shelf(Path(cache))
    except OSError as exc:  # a cache that cannot be made costs start-up time, never the server
        logging.getLogger(__name__).warning("%s=%s unusable (%s): building in memory", CACHE_ENV, cache, exc)
        await server.init()
        return
    if shelf.is_file():
        await server.init(shelf_file=shelf)
        return
    # One builder at a time: servers started together (a test run's workers) wait for the
    # first to publish instead of each spending the CPU on the same shelf.
    lock = await asyncio.to_thread(_lock, Path(cache))
    try:
        if shelf.is_file():
            await server.init(shelf_file=shelf)
            return
        work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
        try:
            await server.init(shelf_file=work / shelf.name)  # builds in memory, then writes the shelf
            _publish(work, shelf)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(lock)  # releases the lock


def cache_is_built() -> bool:
    """The shelf under ``$DAQ_SIM_CACHE`` exists (True too without the variable: nothing to build)."""
    cache = os.environ.get(CACHE_ENV)
    if not cache:
        return True
    try:
        return _published_shelf(Path(cache)).is_file()
    except OSError:
        return True  # unusable: every server builds in memory (logged there)


async def build_cache() -> None:
    """Build and publish the shelf under ``$DAQ_SIM_CACHE`` ahead of the servers that will load
    it (a test run starts this before its workers); no-op when it exists or without the variable."""
    if not cache_is_built():
        from asyncua.server.server import Server

        await _init_standard_address_space(Server())


def _lock(cache: Path) -> int:
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _published_shelf(cache: Path) -> Path:
    from importlib.metadata import version

    cache.mkdir(parents=True, exist_ok=True)
    # asyncua loads a shelf only when a file of exactly its name exists; with the dbm.dumb
    # backend the data lives beside it in .dat/.dir files, so an empty marker of that name
    # goes with them.
    return cache / f"asyncua-{version('asyncua')}" / "standard-address-space"


def _publish(work: Path, shelf: Path) -> None:
    (work / shelf.name).touch()
    with contextlib.suppress(OSError):  # another server published it first; it is the same
        work.rename(shelf.parent)


class _EnvUsers:
    """Accepts the configured users, each with the password held in an environment variable."""

    def __init__(self, users: dict[str, str]):
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        from asyncua.crypto.permission_rules import User, UserRole

        env = self.users.get(username or "")
        if env is None or password is None or os.environ.get(env) != password:
            return None
        return User(role=UserRole.User, name=username)


class SynthOpcUaSimulator(Simulator):
    kind = "synth-opcua"
    description = "synthesis module PLC over OPC UA (asyncua server), with or without security"
    extra_faults: ClassVar[dict[str, str]] = {
        "restart_every_s": "drop all connections and stop listening every this many seconds",
        "restart_down_s": "how long a restart keeps the server down (default 2)",
        "bad_status": "probability per update and node of a BadSensorFailure value",
        "remove_every_s": "delete one node every this many seconds, re-add it after half that time",
    }

    def configure(self, options: dict[str, str]) -> None:
        self.nuclide = options.pop("nuclide", "Lu-177")
        self.activity_mbq = float_option(options, "activity_mbq", 15_000.0)
        self.time_scale = float_option(options, "time_scale", 1.0)
        self.idle_s = float_option(options, "idle_s", 30.0)
        self.extra_channels = int(float_option(options, "extra_channels", 0))
        self.update_s = float_option(options, "update_s", 0.1)
        if self.update_s <= 0 or self.time_scale <= 0 or self.extra_channels < 0:
            raise SimulatorError("update_s and time_scale must be positive, extra_channels >= 0")
        cert, key = options.pop("certificate", None), options.pop("private_key", None)
        if (cert is None) != (key is None):
            raise SimulatorError("give both certificate and private_key, or neither")
        self.certificate = Path(cert) if cert else None
        self.private_key = Path(key) if key else None
        default = "None" if cert is None else ",".join(k for k in _ENDPOINTS if k != "None")
        names = [s.strip() for s in options.pop("security", default).split(",") if s.strip()]
        unknown = [n for n in names if n not in _ENDPOINTS]
        if unknown or not names:
            raise SimulatorError(f"security {unknown or names}: expected some of {', '.join(_ENDPOINTS)}")
        if cert is None and any(n != "None" for n in names):
            raise SimulatorError("secure endpoints need certificate= and private_key=")
        self.endpoints = names
        self.users: dict[str, str] = {}
        for pair in (p for p in options.pop("users", "").split(",") if p.strip()):
            name, sep, env = pair.partition(":")
            if not sep or not name.strip() or not env.strip():
                raise SimulatorError(f"users {pair!r}: expected NAME:ENV")
            self.users[name.strip()] = env.strip()
        self.reject_unknown(options)
        self.process = SynthesisProcess(
            seed=self.rng.randrange(2**32),
            clock=self.clock,
            nuclide_symbol=self.nuclide,
            activity_mbq=self.activity_mbq,
            time_scale=self.time_scale,
            idle_s=self.idle_s,
            extra_channels=self.extra_channels,
        )
        self.specs: dict[str, ChannelSpec] = {c.name: c for c in self.process.channels}
        #: Sticky status per channel set by :meth:`set_status` (a name like ``BadSensorFailure``).
        self.status: dict[str, str] = {}
        self.server: Server | None = None
        self.nodes: dict[str, Node] = {}
        self._written: dict[str, tuple[Any, int]] = {}
        self._removed: set[str] = set()
        self.updates = 0
        self.restarts = 0

    def node_map(self) -> list[dict[str, str]]:
        """Node-map entries (``channel``, ``node_id``, ``unit``) for every channel served,
        auxiliary ones included: for benchmarks and tests that map all of them."""
        channels = self.process.channels
        return [{"channel": c.name, "node_id": node_id(c.name), "unit": c.unit} for c in channels]

    # -- the server ----------------------------------------------------------------

    async def serve(self, listen: str) -> Listener:
        from asyncua import ua
        from asyncua.server.server import Server
        from asyncua.ua.uatypes import Int16, String

        parts = urlsplit(listen)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise SimulatorError(f"--listen {listen!r}: expected opc.tcp://HOST:PORT")
        host = parts.hostname
        public_port = parts.port or free_port(host)
        delay = self.faults.get("delay_s", 0.0)
        # With delay_s the server listens on an inner port behind a relay that holds every
        # response back: a slow PLC on the real wire, without touching asyncua's internals.
        port = free_port(host) if delay else public_port
        url = f"opc.tcp://{host}:{public_port}"
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        users = cast("UserManager", _EnvUsers(self.users)) if self.users else None
        server = Server(user_manager=users)
        await _init_standard_address_space(server)
        server.set_endpoint(url + "/")
        server.set_server_name("hotcell-daq synthesis simulator")
        server.manufacturer_name = "hotcell-daq"
        server.socket_address = (host, port)
        await server.set_build_info(
            "urn:hotcell-daq:synthesis-simulator", "hotcell-daq", "Synthesis simulator (OPC UA)", "1.0", "1",
            datetime.now(UTC),
        )  # fmt: skip
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
        server.set_security_policy([_endpoint(n) for n in self.endpoints])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(NAMESPACE)
        if idx != 2:
            raise SimulatorError(f"namespace {NAMESPACE} got index {idx}, expected 2")
        self.server = server
        self._synth = await server.nodes.objects.add_object(
            ua.NodeId(String("Synth"), Int16(2)), ua.QualifiedName("Synth", 2)
        )
        for spec in self.process.channels:
            await self._add(spec)
        await self._update()
        await server.start()
        tasks = [asyncio.create_task(self._updates(), name="sim:synth-opcua:update")]
        if self.faults.get("restart_every_s"):
            tasks.append(asyncio.create_task(self._restarts(), name="sim:synth-opcua:restart"))
        if self.faults.get("remove_every_s"):
            tasks.append(asyncio.create_task(self._removals(), name="sim:synth-opcua:remove"))
        relay = None
        if delay:
            relay = await DelayRelay.start(host, public_port, port, delay, name="sim:synth-opcua:relay")

        async def close() -> None:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if relay is not None:
                await relay.close()
            with contextlib.suppress(Exception):
                await server.stop()
            # asyncua's server leaves its per-connection tasks to finish on their own.
            await asyncio.sleep(0)

        return Listener(url, close)

    async def _add(self, spec: ChannelSpec) -> None:
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds
        from asyncua.ua.uatypes import Int16, String

        initial: Any = {"float": 0.0, "int": 0, "bool": False, "str": ""}[spec.type]
        node = await self._synth.add_variable(
            ua.NodeId(String(f"Synth.{spec.name}"), Int16(2)),
            ua.QualifiedName(spec.name, 2),
            initial,
            _variant(spec.type),
        )
        await node.write_attribute(
            AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText(f"{spec.description} [{spec.unit}]"))),
        )
        self.nodes[spec.name] = node
        self._written.pop(spec.name, None)

    async def _update(self) -> None:
        from asyncua import ua
        from asyncua.ua.status_codes import StatusCodes
        from asyncua.ua.uatypes import DateTime, UInt32

        assert self.server is not None
        self.process.frozen = bool(self.faults.get("freeze"))
        values = self.process.snapshot()
        now = DateTime.now(UTC)
        p_bad = self.faults.get("bad_status", 0.0)
        for name, value in values.items():
            node = self.nodes.get(name)
            if node is None or name in self._removed:
                continue
            status_name = self.status.get(name)
            if status_name is None and p_bad and self.rng.random() < p_bad:
                status_name = "BadSensorFailure"
            code = int(getattr(StatusCodes, status_name)) if status_name else 0
            previous = self._written.get(name)
            if previous is not None and previous[1] == code and (code or previous[0] == value):
                continue
            if code and previous is not None:
                value = previous[0]  # a failed sensor keeps showing its last value, flagged Bad
            dv = ua.DataValue(
                ua.Variant(value, _variant(self.specs[name].type)),
                StatusCode=ua.StatusCode(UInt32(code)),
                SourceTimestamp=now,
                ServerTimestamp=now,
            )
            await self.server.write_attribute_value(node.nodeid, dv)
            self._written[name] = (value, code)
        self.updates += 1

    async def _updates(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.update_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self._update()

    # -- faults --------------------------------------------------------------------

    def set_status(self, channel: str, status: str | None) -> None:
        """Give ``channel`` a sticky StatusCode (``BadSensorFailure``, ``UncertainLastUsableValue``)."""
        from asyncua.ua.status_codes import StatusCodes

        if status is not None and not hasattr(StatusCodes, status):
            raise SimulatorError(f"unknown StatusCode {status!r}")
        if status is None:
            self.status.pop(channel, None)
        else:
            self.status[channel] = status

    async def remove_node(self, channel: str) -> None:
        """Delete the channel's variable from the address space (a PLC program change)."""
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds
        from asyncua.ua.status_codes import StatusCodes
        from asyncua.ua.uatypes import UInt32

        assert self.server is not None
        node = self.nodes[channel]
        self._removed.add(channel)
        # A server tells the monitored items of a deleted node with BadNodeIdUnknown. asyncua
        # 2.1.0 means to (AddressSpace._delete_node_callbacks) but calls its async callback
        # without awaiting it, so the notification never leaves: send it here, then drop the
        # callbacks so the broken path has nothing to call.
        gone = ua.DataValue(StatusCode=ua.StatusCode(UInt32(StatusCodes.BadNodeIdUnknown)))
        await self.server.write_attribute_value(node.nodeid, gone)
        aspace = self.server.iserver.aspace
        nodedata = aspace.get(node.nodeid)
        if nodedata is not None and AttributeIds.Value in nodedata.attributes:
            for handle in list(nodedata.attributes[AttributeIds.Value].datachange_callbacks):
                aspace.delete_datachange_callback(handle)
        await self.server.delete_nodes([node])

    async def restore_node(self, channel: str) -> None:
        """Add the channel's variable back, with the same NodeId."""
        self._removed.discard(channel)
        await self._add(self.specs[channel])

    async def restart(self, down_s: float = 2.0) -> None:
        """Drop every connection and stop listening for ``down_s``: a PLC restart, as clients see it."""
        assert self.server is not None
        assert self.server.bserver is not None
        self.restarts += 1
        await self.server.bserver.stop()
        await asyncio.sleep(down_s)
        await self.server.bserver.start()

    async def _restarts(self) -> None:
        every = self.faults["restart_every_s"]
        while True:
            await asyncio.sleep(every)
            await self.restart(self.faults.get("restart_down_s", 2.0))

    async def _removals(self) -> None:
        every = self.faults["remove_every_s"]
        names = list(self.nodes)
        while True:
            await asyncio.sleep(every / 2)
            channel = self.rng.choice(names)
            await self.remove_node(channel)
            await asyncio.sleep(every / 2)
            await self.restore_node(channel)
