"""The synthesis process model (:mod:`simulators.synthesis`) served by a real pymodbus server.

About 400 lines on purpose: one server with its faults (the model and the register map live
apart), whose TCP, RTU-over-PTY and restart paths share the same request hooks.

``daq simulate synth-modbus --listen tcp://127.0.0.1:PORT`` serves Modbus TCP;
``--listen pty`` serves Modbus RTU on a pseudo-terminal (the printed device path is the
serial port a driver opens). Each unit id (``--set unit_ids=1,2``) is a synthesizer of its
own, with its own process model.

The register map (every table and address, the word order) is :mod:`simulators.synth_modbus_map`.

The server logs every request's unit id and function code (:attr:`SynthModbusSimulator.function_codes`,
:attr:`~SynthModbusSimulator.request_log`), so a test can show what a client sent.

Faults: ``delay_s`` (slow responses), ``freeze`` (values stop changing), ``exception_unit``
with ``exception_code`` (one unit id answers every request with that exception, default 4),
``silent_unit`` (one unit id never answers), ``restart_every_s`` with ``restart_down_s``
(the server goes away and comes back), ``disconnect_after_s`` (TCP connections dropped).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import tty
from typing import Any, ClassVar
from urllib.parse import urlsplit

from simulators.base import Listener, Simulator, SimulatorError, float_option
from simulators.synth_modbus_map import HOLD_COIL, MAX_EXTRA, SETPOINT_ADDRESS, UnitImage
from simulators.synthesis import SynthesisProcess

_FC_READ = {1: "c", 2: "d", 3: "h", 4: "i"}
_UNSUPPORTED_FAULTS = frozenset({"drop", "garble", "split", "merge", "no_reply"})


@functools.cache
def _server_classes() -> tuple[Any, Any]:
    """pymodbus's TCP and serial servers, answering each request with its own ids.

    pymodbus 3.16's request handler stamps a reply with the transaction and unit id of the
    *latest* request on the connection, so a reply delayed past the client's timeout would
    carry the next request's ids and pass for its answer. A device answers each request
    with that request's ids: the handler below captures them before it awaits anything.
    """
    from pymodbus.constants import ExcCodes
    from pymodbus.exceptions import NoSuchIdException
    from pymodbus.pdu import ExceptionResponse
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.server.requesthandler import ServerRequestHandler

    class Handler(ServerRequestHandler):
        async def handle_request(self) -> None:
            pdu, addr = self.last_pdu, self.last_addr
            if not pdu:
                return
            try:
                response = await pdu.datastore_update(self.server.context, pdu.dev_id)
            except NoSuchIdException:
                response = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            except asyncio.CancelledError:
                raise
            except Exception:  # as pymodbus does: a datastore failure is exception 4
                response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
            response.transaction_id = pdu.transaction_id
            response.dev_id = pdu.dev_id
            send: Any = self.server_send  # untyped in pymodbus
            send(response, addr)

    handler: Any = Handler

    def new_connection(self: Any) -> Any:
        return handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)

    tcp = type("SimTcpServer", (ModbusTcpServer,), {"callback_new_connection": new_connection})
    serial = type("SimSerialServer", (ModbusSerialServer,), {"callback_new_connection": new_connection})
    return tcp, serial


class SynthModbusSimulator(Simulator):
    kind = "synth-modbus"
    description = (
        "radiolabelling synthesizer (process model) on a pymodbus server: Modbus TCP or RTU on a PTY"
    )
    extra_faults: ClassVar[dict[str, str]] = {
        "exception_unit": "unit id that answers every request with exception_code",
        "exception_code": "Modbus exception code for exception_unit (default 4, device failure)",
        "silent_unit": "unit id that never answers (the client times out)",
        "restart_every_s": "stop the server this often, then start it again",
        "restart_down_s": "how long the server stays down on each restart (default 2)",
    }

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        bad = sorted(set(self.faults) & _UNSUPPORTED_FAULTS)
        if bad:
            raise SimulatorError(f"fault(s) {', '.join(bad)} do not apply here (pymodbus frames the bytes)")
        #: (unit id, function code, address, count) of the latest requests.
        self.request_log: collections.deque[tuple[int, int, int, int]] = collections.deque(maxlen=10_000)
        #: How many requests of each function code arrived.
        self.function_codes: collections.Counter[int] = collections.Counter()
        self.writes: list[tuple[int, int, int, list[int] | list[bool]]] = []
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drop_handles: list[asyncio.TimerHandle] = []
        self._stopping = False

    def configure(self, options: dict[str, str]) -> None:
        raw_units = options.pop("unit_ids", "1")
        try:
            self.unit_ids = sorted({int(u) for u in raw_units.split(",") if u.strip()})
        except ValueError:
            raise SimulatorError(f"option unit_ids={raw_units!r}: expected e.g. 1,2") from None
        if not self.unit_ids or not all(1 <= u <= 247 for u in self.unit_ids):
            raise SimulatorError("option unit_ids: ids from 1 to 247")
        self.extra_channels = int(float_option(options, "extra_channels", 0))
        if not 0 <= self.extra_channels <= MAX_EXTRA:
            raise SimulatorError(f"option extra_channels: 0 to {MAX_EXTRA}")
        self.time_scale = float_option(options, "time_scale", 1.0)
        self.idle_s = float_option(options, "idle_s", 30.0)
        self.activity_mbq = float_option(options, "activity_mbq", 15_000.0)
        self.update_s = float_option(options, "update_s", 0.1)
        self.nuclide = options.pop("nuclide", "Lu-177")
        self.word_order = options.pop("word_order", "big")
        if self.word_order not in ("big", "little"):
            raise SimulatorError("option word_order: big or little")
        if self.time_scale <= 0 or self.update_s <= 0:
            raise SimulatorError("options time_scale and update_s must be positive")
        self.reject_unknown(options)
        self.images: dict[int, UnitImage] = {}

    # -- the process -----------------------------------------------------------------

    def _build_images(self) -> None:
        if self.images:
            return
        for uid in self.unit_ids:
            proc = SynthesisProcess(
                seed=self.rng.randrange(2**31),
                clock=self.clock,
                nuclide_symbol=self.nuclide,
                activity_mbq=self.activity_mbq,
                time_scale=self.time_scale,
                idle_s=self.idle_s,
                extra_channels=self.extra_channels,
            )
            proc.frozen = bool(self.faults.get("freeze"))
            self.images[uid] = UnitImage(proc, self.extra_channels, self.word_order)

    def process(self, unit_id: int) -> SynthesisProcess:
        self._build_images()
        return self.images[unit_id].process

    def set_frozen(self, frozen: bool) -> None:
        for image in self.images.values():
            image.process.frozen = frozen

    async def _updater(self) -> None:
        while True:
            await asyncio.sleep(self.update_s)
            for image in self.images.values():
                image.refresh()

    # -- pymodbus --------------------------------------------------------------------

    def _devices(self) -> list[Any]:
        from pymodbus.simulator import DataType, SimData, SimDevice

        devices = []
        for uid, image in self.images.items():
            devices.append(
                SimDevice(
                    uid,
                    simdata=(
                        [SimData(0, values=list(image.coils), datatype=DataType.BITS)],
                        [SimData(0, values=list(image.discretes), datatype=DataType.BITS)],
                        [SimData(0, values=list(image.holding), datatype=DataType.REGISTERS)],
                        [SimData(0, values=list(image.input), datatype=DataType.REGISTERS)],
                    ),
                    action=self._action(uid),
                )
            )
        return devices

    def _action(self, uid: int) -> Any:
        from pymodbus.constants import ExcCodes

        image = self.images[uid]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> Any:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            delay = self.faults.get("delay_s", 0.0)
            if delay:
                await asyncio.sleep(delay)
            if self.faults.get("silent_unit") == uid:
                await asyncio.Event().wait()  # never answers; cancelled on close
            if self.faults.get("exception_unit") == uid:
                return ExcCodes(int(self.faults.get("exception_code", 4)))
            if set_values is not None:
                return self._write(uid, function_code, address, set_values)
            table = _FC_READ.get(function_code)
            if table is None:
                return None
            block = image.block(table)
            if table == "h":
                # The writable set point keeps what was written; the rest follows the process.
                registers[0:SETPOINT_ADDRESS] = block[0:SETPOINT_ADDRESS]
            elif table == "c":
                registers[0] = block[0]  # valves; the hold request (coil 100) keeps its state
            else:
                registers[0 : len(block)] = block
            return None

        return action

    def _write(self, uid: int, function_code: int, address: int, values: list[int] | list[bool]) -> Any:
        from pymodbus.constants import ExcCodes

        if function_code in (5, 15):
            ok = address == HOLD_COIL and len(values) == 1
        else:
            ok = address >= SETPOINT_ADDRESS and address + len(values) <= SETPOINT_ADDRESS + 2
        if not ok:
            return ExcCodes.ILLEGAL_ADDRESS
        self.writes.append((uid, function_code, address, list(values)))
        # Kept in the image too, so a written value survives a server restart.
        image = self.images[uid]
        if function_code in (5, 15):
            image.coils[address] = bool(values[0])
        else:
            image.holding[address : address + len(values)] = [int(v) for v in values]
        return None

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            fc = int(pdu.function_code)
            self.function_codes[fc] += 1
            self.request_log.append((int(pdu.dev_id), fc, int(pdu.address), int(pdu.count)))
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        limit = self.faults.get("disconnect_after_s")
        if connected and limit and self._server is not None:
            server = self._server
            handle = asyncio.get_running_loop().call_later(limit, self._drop_connections, server)
            self._drop_handles.append(handle)

    def _drop_connections(self, server: Any) -> None:
        for conn in list(server.active_connections.values()):
            conn.close()

    # -- serving ---------------------------------------------------------------------

    async def serve(self, listen: str) -> Listener:
        """Serve at ``tcp://HOST:PORT`` (port 0 picks a free one) or ``pty`` (Modbus RTU).

        ``tcp://__pymodbus_nullmodem:PORT`` (pymodbus's ``NULLMODEM_HOST``) serves on pymodbus's
        in-memory null modem instead of a socket: a client given the same host and port
        reaches it in the same process (tests)."""
        self._build_images()
        self._stopping = False
        updater = asyncio.create_task(self._updater(), name=f"sim:{self.kind}:update")
        try:
            if listen == "pty":
                url, closer = await self._serve_pty()
            else:
                url, closer = await self._serve_tcp(listen)
        except BaseException:
            updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updater
            raise
        restarter: asyncio.Task[None] | None = None
        if self.faults.get("restart_every_s") and listen != "pty":
            restarter = asyncio.create_task(self._restarts(), name=f"sim:{self.kind}:restart")

        async def close() -> None:
            self._stopping = True
            for task in (restarter, updater):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await closer()

        return Listener(url, close)

    async def _start_tcp(self, host: str, port: int) -> Any:
        server = _server_classes()[0](
            self._devices(),
            address=(host, port),
            trace_pdu=self._trace_pdu,
            trace_connect=self._trace_connect,
        )
        self._server = server
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise SimulatorError(f"cannot listen on {host}:{port}: {exc}") from None
        return server

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        for handle in self._drop_handles:
            handle.cancel()
        self._drop_handles.clear()
        if server is not None:
            await server.shutdown()
        # Requests still waiting in a fault (a delay, a silent unit) die with the server.
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0)

    async def _serve_tcp(self, listen: str) -> tuple[str, Any]:
        parts = urlsplit(listen)
        if parts.scheme != "tcp" or parts.hostname is None:
            raise SimulatorError(f"--listen {listen!r}: expected tcp://HOST:PORT or pty")
        from pymodbus.transport import NULLMODEM_HOST

        server = await self._start_tcp(parts.hostname, parts.port or 0)
        if parts.hostname == NULLMODEM_HOST:
            # pymodbus's in-memory null modem (tests): no socket, the port is the given one.
            host, port = parts.hostname, parts.port or 0
        else:
            host, port = server.transport.sockets[0].getsockname()[:2]
        self._bound = (host, port)
        return f"tcp://{host}:{port}", self._stop_server

    async def restart(self, down_s: float) -> None:
        """Stop the server, stay down ``down_s``, start it again on the same port (TCP)."""
        await self._stop_server()
        await asyncio.sleep(down_s)
        if not self._stopping:
            await self._start_tcp(*self._bound)

    async def _restarts(self) -> None:
        every = self.faults["restart_every_s"]
        down = self.faults.get("restart_down_s", 2.0)
        while True:
            await asyncio.sleep(every)
            await self.restart(down)

    async def _serve_pty(self) -> tuple[str, Any]:
        """RTU over a pair of PTYs joined by a byte pump: the server owns one, a driver the other."""
        from pymodbus.framer import FramerType

        m_server, s_server = os.openpty()
        m_driver, s_driver = os.openpty()
        for fd in (s_server, s_driver):
            tty.setraw(fd)
        for fd in (m_server, m_driver):
            os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()

        def pump(src: int, dst: int) -> None:
            try:
                data = os.read(src, 4096)
            except OSError:
                return
            with contextlib.suppress(OSError):
                os.write(dst, data)

        loop.add_reader(m_server, pump, m_server, m_driver)
        loop.add_reader(m_driver, pump, m_driver, m_server)
        server = _server_classes()[1](
            self._devices(),
            framer=FramerType.RTU,
            port=os.ttyname(s_server),
            # A PTY refuses parity settings (tcsetattr EINVAL): the line is 8N1, and a driver
            # on it must say serial.parity = "N" (real RTU buses default to 8E1).
            baudrate=19200,
            parity="N",
            trace_pdu=self._trace_pdu,
        )
        self._server = server
        await server.serve_forever(background=True)

        async def close() -> None:
            await self._stop_server()
            for fd in (m_server, m_driver):
                loop.remove_reader(fd)
            # The slaves stay open until here, so the masters never see EIO while a driver
            # closes and reopens its port (a real device stays powered across reconnects).
            for fd in (m_server, m_driver, s_server, s_driver):
                with contextlib.suppress(OSError):
                    os.close(fd)

        return os.ttyname(s_driver), close
