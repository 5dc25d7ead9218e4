"""The Modbus driver: the connection, one poll over the plan (splitting a read that an
address of it is refused, in the same poll), and writes.

Beside it: the plan and its re-planning around refused addresses (:mod:`.plan`), the readings
of a poll (:mod:`.readings`), what lasts between polls (:mod:`.health`), the link
(:mod:`.link`), the codec and the error mapping.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from daq.clock import Clock
from daq.errors import ConnectError, DeviceError, ReadTimeout, WriteRefused
from daq.model import DeviceInfo, Reading, Reason
from drivers.base import Capability, Deadline, Driver
from drivers.modbus.codec import ValueCodec
from drivers.modbus.config import ModbusConfig
from drivers.modbus.errors import EXCEPTION_NAMES, UNIT_DOWN_CODES, UnitFailed, map_exceptions
from drivers.modbus.health import Health
from drivers.modbus.link import ModbusLinkFactory, open_client
from drivers.modbus.plan import PlannedRead, UnitPlan, compile_plan, recoalesce
from drivers.modbus.readings import decode, unit_bad

log = structlog.get_logger("drivers.modbus")

# Every failure pymodbus logs is also raised to this driver and journaled by the supervisor;
# its own error lines (with frame dumps) would only say the same thing twice.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


class _Bus:
    """One RS-485 bus: a lock, and the end of the last frame for the inter-frame gap.

    An instrument owns its bus (the config refuses two instruments on one port, and the
    port is opened exclusively), so the bus lives with the driver.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.last_ns = 0


class ModbusDriver(Driver):
    kind = "modbus"
    config_model = ModbusConfig
    capability = Capability.POLLED
    config: ModbusConfig
    write_commands: ClassVar[dict[str, str]] = {
        "set": "write CHANNEL=VALUE to a writable holding register or coil (engineering units)",
    }

    def __init__(self, config: ModbusConfig, clock: Clock, *, link_factory: ModbusLinkFactory = open_client):
        super().__init__(config, clock)
        #: Makes the pymodbus client (:func:`.link.open_client`); a test passes :func:`.link.null_modem`.
        self.link_factory = link_factory
        self._client: Any = None
        self._plan = compile_plan(config)
        self._by_name = {c.name: c for c in config.all_channels}
        self._timeout_s = config.per_request_timeout_s()
        self._bus: _Bus | None = None if config.is_tcp else _Bus()
        self._gap_ns = int(self._frame_gap_s() * 1e9)
        # A fingerprint of the effective map (file and inline), journaled on every connect.
        effective = json.dumps([c.model_dump() for c in config.all_channels], sort_keys=True)
        self.map_sha256 = hashlib.sha256(effective.encode()).hexdigest()
        #: Requests sent by this driver, for status and benchmarks.
        self.requests = 0
        #: Starved channels, refused addresses and failing units, for status.
        self.health = Health(self.name, config.timeout_s)
        self.refused = self.health.refused
        self.starved = self.health.starved

    def _frame_gap_s(self) -> float:
        if self.config.is_tcp:
            return 0.0
        if self.config.frame_gap_s is not None:
            return self.config.frame_gap_s
        baud = self.config.serial.baudrate or 19200
        # 11 bits per character in RTU (start, 8 data, parity or a second stop bit, stop).
        return 0.00175 if baud > 19200 else 3.5 * 11 / baud

    def channels(self) -> list[tuple[str, str]]:
        return [(c.name, c.unit) for c in self.config.all_channels]

    @property
    def plan(self) -> list[UnitPlan]:
        return self._plan

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> DeviceInfo:
        if self._client is None or not self._client.connected:
            await self.close()
            client = self.link_factory(self.config, self.name, self._timeout_s)
            self._client = client
            # pymodbus has one timeout for connecting and for each request: give the connect
            # connect_timeout_s, then set it back to the per-request timeout.
            params = client.ctx.comm_params
            params.timeout_connect = self.config.connect_timeout_s
            try:
                ok = await client.connect()
                params.timeout_connect = self._timeout_s
            except Exception as exc:  # pyserial raises SerialException, ValueError or OSError
                await self.close()
                raise ConnectError(f"{self.name}: cannot open {self.config.port}: {exc}") from exc
            if not ok:
                await self.close()
                raise ConnectError(f"{self.name}: cannot connect to {self.config.port}")
        reads = sum(len(u.reads) for u in self._plan)
        return DeviceInfo(
            model=f"Modbus {'TCP' if self.config.is_tcp else 'RTU'} {self.config.port}",
            extra={
                "unit_ids": [u.unit_id for u in self._plan],
                "channels": len(self.config.all_channels),
                "requests_per_poll": reads,
                "map_sha256": self.map_sha256,
                "map_file": self.config.map_file,
            },
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # close never raises
                log.debug("modbus close failed", instrument=self.name, error=repr(exc))
            # Let the transport's connection_lost callbacks run before a reconnect.
            await asyncio.sleep(0)

    # -- requests --------------------------------------------------------------------

    def _connected_client(self) -> Any:
        client = self._client
        if client is None or not client.connected:
            raise ConnectError(f"{self.name}: not connected to {self.config.port}")
        return client

    async def _execute(self, call: Callable[[], Any]) -> Any:
        """One transaction, under the bus lock and after the inter-frame gap (RTU)."""
        self._connected_client()
        self.requests += 1
        bus = self._bus
        if bus is None:
            return await call()
        async with bus.lock:
            wait_ns = bus.last_ns + self._gap_ns - self.clock.monotonic_ns()
            if wait_ns > 0:
                await self.clock.sleep(wait_ns / 1e9)
            try:
                return await call()
            finally:
                bus.last_ns = self.clock.monotonic_ns()

    def _is_connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _read(self, unit_id: int, read: PlannedRead) -> Any:
        c = self._connected_client()
        fn = {
            1: c.read_coils,
            2: c.read_discrete_inputs,
            3: c.read_holding_registers,
            4: c.read_input_registers,
        }[read.function]
        try:
            with map_exceptions(self.name, self._is_connected):
                response = await self._execute(lambda: fn(read.address, count=read.count, device_id=unit_id))
        except ReadTimeout as exc:
            raise UnitFailed(
                Reason.TIMEOUT,
                f"unit {unit_id}: no valid reply to FC {read.function} at {read.address} "
                f"within {self._timeout_s:g} s",
            ) from exc
        fc = int(getattr(response, "function_code", 0))
        if fc not in (read.function, read.function | 0x80):
            # A late reply to an earlier request (after a timeout): the link is out of step.
            raise UnitFailed(
                Reason.PARSE_ERROR,
                f"unit {unit_id}: a reply with FC {fc} to a request with FC {read.function}: out of step",
            )
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise UnitFailed(
                Reason.DEVICE_ERROR,
                f"unit {unit_id}: Modbus exception {code} ({name}) to FC {read.function} "
                f"at {read.address} x{read.count}",
                code,
            )
        return response

    async def read(self, deadline: Deadline | None = None) -> list[Reading]:
        """One poll of every unit id; per-unit failures come back as BAD readings.

        Raises :class:`ConnectError` when the link is gone and :class:`ReadTimeout` when
        no unit id answered at all (the link is in doubt). A request that could not finish
        by the poll's ``deadline`` (the supervisor's, so the one budget of the poll) is not
        sent: its channels are BAD (``timeout``) and the values already read are kept, where
        the supervisor's timeout would drop them all.
        """
        out: list[Reading] = []
        answered = timed_out = sent = 0
        out_of_step: UnitFailed | None = None
        clock = self.clock
        budget_end = self.poll_deadline(deadline).mono_ns
        request_ns = int(self._timeout_s * 1e9)
        back: list[str] = []
        again: list[str] = []
        for unit in self._plan:
            failed = False
            refused_reads: list[PlannedRead] = []
            queue = collections.deque(unit.reads)
            while queue:
                read = queue.popleft()
                if sent and clock.monotonic_ns() + request_ns > budget_end:
                    late = UnitFailed(
                        Reason.TIMEOUT,
                        f"unit {unit.unit_id}: FC {read.function} at {read.address} not sent: "
                        f"the poll's {self.config.timeout_s:g} s were spent",
                    )
                    unsent = [read, *queue]
                    out.extend(self._bad(unit, unsent, late))
                    self.health.starve(unit, unsent)
                    break
                sent += 1
                try:
                    response = await self._read(unit.unit_id, read)
                    acq_ns, mono_ns = clock.time_ns(), clock.monotonic_ns()
                    answered += 1
                    out.extend(decode(self.name, unit.unit_id, read, response, acq_ns, mono_ns))
                    self.health.fed(read, back, again)
                except UnitFailed as failure:
                    if failure.code == 2:
                        # The unit answered; one address of the read is not mapped.
                        answered += 1
                        if len(read.values) > 1:
                            # Isolate it: both halves are asked next, in this same poll.
                            halves = read.halves()
                            unit.reads[unit.reads.index(read) : unit.reads.index(read) + 1] = halves
                            queue.extendleft(reversed(halves))
                            refused_reads.append(read)
                            continue
                        out.extend(self._bad(unit, [read], failure))
                        self.health.refuse(unit, read, failure)
                        self.health.fed(read, back, again, keep_refused=True)
                        continue
                    failed = True
                    if failure.reason == Reason.PARSE_ERROR:
                        out_of_step = failure
                    if failure.reason == Reason.TIMEOUT or failure.code in UNIT_DOWN_CODES:
                        # The unit is silent or reported itself down: skip its other reads.
                        out.extend(self._bad(unit, [read, *queue], failure))
                        timed_out += failure.reason == Reason.TIMEOUT
                        self.health.unit_state(unit, True, failure)
                        break
                    out.extend(self._bad(unit, [read], failure))
                    answered += failure.reason != Reason.PARSE_ERROR
                    self.health.unit_state(unit, True, failure)
            else:
                if refused_reads:
                    # Every half was answered or refused: read the rest in blocks again.
                    recoalesce(unit, refused_reads, self.refused, self.config)
            if not failed:
                self.health.unit_state(unit, False, None)
        if back:
            log.info("modbus channels read again after starving", instrument=self.name, channels=back)
        if again:
            log.info("modbus addresses answered again", instrument=self.name, channels=again)
        if out_of_step is not None:
            # Replies no longer match requests: drop the link, so the supervisor reconnects
            # with fresh transaction ids. This poll's readings are kept.
            log.warning(
                "modbus link out of step; reconnecting", instrument=self.name, error=out_of_step.message
            )
            await self.close()
        elif not answered and timed_out:
            raise ReadTimeout(f"{self.name}: no unit id answered within {self._timeout_s:g} s")
        return out

    def _bad(self, unit: UnitPlan, reads: list[PlannedRead], failure: UnitFailed) -> list[Reading]:
        return unit_bad(self.name, self.clock.time_ns(), self.clock.monotonic_ns(), unit, reads, failure)

    def problems(self) -> dict[str, dict[str, Any]]:
        return self.health.problems(self._plan)

    # -- writes ----------------------------------------------------------------------

    async def write(self, command: str, value: str | None = None) -> str:
        """``set`` with ``CHANNEL=VALUE``: write one writable holding register or coil."""
        self.check_write(command)
        channel, sep, text = (value or "").partition("=")
        channel, text = channel.strip(), text.strip()
        if not sep or not channel or not text:
            raise WriteRefused(f"{self.name}: expected CHANNEL=VALUE, got {value!r}")
        ch = self._by_name.get(channel)
        if ch is None:
            raise WriteRefused(f"{self.name}: no channel {channel!r}")
        if not ch.writable:
            raise WriteRefused(f"{self.name}: channel {channel!r} is not writable in the register map")
        uid = self.config.unit_id if ch.unit_id is None else ch.unit_id
        c = self._connected_client()
        if ch.table == "coil":
            lowered = text.lower()
            if lowered not in ("0", "1", "true", "false", "on", "off"):
                raise WriteRefused(f"{self.name}: coil {channel!r} takes 0/1, true/false or on/off")
            state = lowered in ("1", "true", "on")
            response = await self._write_call(lambda: c.write_coil(ch.address, state, device_id=uid))
            self._check_write_response(response, channel)
            return f"coil {ch.address} of unit {uid} set to {int(state)}"
        try:
            number = float(text)
            codec = ValueCodec(
                ch.data_type,
                ch.word_order or self.config.word_order,
                ch.byte_order or self.config.byte_order,
                ch.scale,
                ch.offset,
            )
            registers = codec.encode(number)
        except ValueError as exc:
            raise WriteRefused(f"{self.name}: cannot write {text!r} to {channel!r}: {exc}") from None
        if len(registers) == 1:
            response = await self._write_call(
                lambda: c.write_register(ch.address, registers[0], device_id=uid)
            )
        else:
            response = await self._write_call(lambda: c.write_registers(ch.address, registers, device_id=uid))
        self._check_write_response(response, channel)
        return f"holding {ch.address} of unit {uid} set to {number:g} (registers {registers})"

    async def _write_call(self, call: Callable[[], Any]) -> Any:
        try:
            with map_exceptions(self.name, self._is_connected):
                return await self._execute(call)
        except ReadTimeout as exc:
            raise ReadTimeout(f"{self.name}: no reply to the write within {self._timeout_s:g} s") from exc

    def _check_write_response(self, response: Any, channel: str) -> None:
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise DeviceError(
                f"{self.name}: write to {channel!r} refused: Modbus exception {code} "
                f"({EXCEPTION_NAMES.get(code, 'unknown exception')})",
                code=str(code),
                channels=[channel],
            )
