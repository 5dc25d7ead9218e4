"""Modbus TCP and RTU, driven by a register map declared in config.

Synthesizer modules and hot-cell PLCs expose process values in Modbus tables; each site has
its own map, so this driver is generic: the ``channels`` of an instrument say where each value
lives (unit id, table, address), how to decode it (type, word and byte order) and how to turn
it into an engineering value (scale, offset, unit). See :mod:`drivers.modbus_codec`.

- ``port = "tcp://HOST:PORT"`` is Modbus TCP; any other port (a device path, a PTY,
  pyserial's ``socket://`` or ``rfc2217://``) is Modbus RTU on a serial line.
- At connect the map is compiled into a plan: per unit id and table, contiguous addresses
  are coalesced into the fewest reads within the protocol limits (125 registers or 2000
  bits). Each value is stamped with the time its own response arrived.
- A Modbus exception or a timeout on one unit id marks only the channels it covers BAD
  (reason ``device_error`` with ``exception_code``, or ``timeout``); the other unit ids'
  readings of the same poll stay GOOD. Only when no unit answers is the poll a timeout.
- Exception 2 (illegal data address) to a coalesced read does not blank its block: the read
  is split in halves, down to single values, in the same poll, until the refused address is
  isolated. The plan is then made again around it (the refused value alone, the rest in
  blocks that never cover it), so the search is not repeated every poll. The refused
  channel is BAD with the exception, logged once and listed in
  :meth:`ModbusDriver.problems`; the rest of the block stays GOOD.
- Reads left unsent because the poll's ``timeout_s`` was spent (a slow server) are counted
  per channel: the first poll that starves a channel is logged, and the counts are in
  :meth:`ModbusDriver.problems` (``starved``) until that channel is read again.
- Only read function codes (1 to 4) are sent, unless ``allow_writes = true``: then
  ``write("set", "CHANNEL=VALUE")`` writes a ``writable`` holding register (FC 6 or 16)
  or coil (FC 5), and the daemon audits it.
- RTU: one lock per bus, and at least ``frame_gap_s`` of silence between frames (3.5
  character times, 1.75 ms above 19200 baud: Modbus over Serial Line V1.02, 2.5.1.1).

pymodbus (pinned) does the framing; its client is created without its own reconnect or
retries, because the supervisor owns both.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from daq.clock import Clock
from daq.config.base import PositiveSeconds, SerialInstrument, StrictModel
from daq.errors import ConnectError, DeviceError, ProtocolError, ReadTimeout, WriteRefused
from daq.model import DeviceInfo, Quality, Reading, Reason
from drivers.base import Deadline, Driver
from drivers.modbus_codec import (
    MAX_BITS,
    MAX_REGISTERS,
    READ_FUNCTION,
    WIDTH,
    Span,
    ValueCodec,
    is_bit_table,
    plan_requests,
    registers_to_bytes,
)

log = structlog.get_logger("drivers.modbus")

# Every failure pymodbus logs is also raised to this driver and journaled by the supervisor;
# its own error lines (with frame dumps) would only say the same thing twice.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

#: Modbus exception codes (Modbus Application Protocol V1.1b3, section 7).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
#: Codes after which the rest of that unit's reads in this poll are not tried.
_UNIT_DOWN_CODES = frozenset({4, 10, 11})

UnitId = Annotated[int, Field(ge=0, le=255)]


class ModbusChannel(StrictModel):
    """One value in the register map."""

    #: Channel name as journaled.
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")]
    #: Unit (slave) id; defaults to the instrument's ``unit_id``.
    unit_id: UnitId | None = None
    table: Literal["holding", "input", "coil", "discrete"]
    #: Zero-based protocol address (register 40001 of a manual is holding address 0).
    address: Annotated[int, Field(ge=0, le=65535)]
    #: Defaults to ``bool`` for coils and discrete inputs and ``uint16`` for registers.
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit"] | None = None
    #: Bit number (0 = least significant) for ``type = "bit"``.
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    word_order: Literal["big", "little"] | None = None
    byte_order: Literal["big", "little"] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    #: Names of integer states (a step number's name), e.g. ``{ "3" = "heat" }``; a reading
    #: carries its state's name in ``attrs["text"]`` (``attrs["unmapped_state"]`` if none).
    enum: dict[str, str] | None = None
    #: May be written with ``allow_writes = true`` (holding registers and coils only).
    writable: bool = False
    description: str = ""

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("scale must be a finite, non-zero number")
        return v

    @field_validator("enum")
    @classmethod
    def _enum_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            try:
                int(key)
            except ValueError:
                raise ValueError(f"enum key {key!r} is not an integer") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> ModbusChannel:
        kind = self.data_type
        if is_bit_table(self.table) and kind != "bool":
            raise ValueError(f"{self.table} channels are single bits: type must be bool (got {kind})")
        if (kind == "bit") != (self.bit is not None):
            raise ValueError("bit is required with type = 'bit' and only allowed with it")
        if self.address + WIDTH[kind] - 1 > 65535:
            raise ValueError(f"a {kind} at address {self.address} runs past 65535")
        if self.writable and (self.table not in ("holding", "coil") or kind == "bit"):
            raise ValueError("only holding registers and coils can be writable (not single bits)")
        return self

    @property
    def data_type(self) -> str:
        if self.type is not None:
            return self.type
        return "bool" if is_bit_table(self.table) else "uint16"


class ModbusConfig(SerialInstrument):
    """A Modbus TCP connection or RTU bus with its register map.

    ``port`` is ``tcp://HOST:PORT`` for Modbus TCP, otherwise the serial port of an RTU bus
    (``serial`` line settings apply; Modbus RTU's default is 19200 8E1).
    """

    kind: Literal["modbus"]
    #: Unit id of channels that do not name one.
    unit_id: UnitId = 1
    #: Default word and byte order of multi-register values (see drivers.modbus_codec).
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    #: Timeout of one request. Keep it well below timeout_s, so one silent unit id does not
    #: use up the whole poll; default timeout_s / (2 x number of unit ids).
    request_timeout_s: PositiveSeconds | None = None
    max_registers_per_request: Annotated[int, Field(ge=1, le=MAX_REGISTERS)] = MAX_REGISTERS
    max_bits_per_request: Annotated[int, Field(ge=1, le=MAX_BITS)] = MAX_BITS
    #: Read across holes of up to this many undefined addresses to save requests.
    max_gap: Annotated[int, Field(ge=0, le=MAX_REGISTERS)] = 0
    #: RTU only: silence between frames; default 3.5 characters (1.75 ms above 19200 baud).
    frame_gap_s: Annotated[float, Field(ge=0, le=1)] | None = None
    #: A TOML file of ``[[channels]]`` (relative paths from the config file's directory);
    #: its channels come first, then any given inline here.
    map_file: str | None = None
    #: The channels given inline.
    channels: list[ModbusChannel] = Field(default_factory=list)
    #: The channels read from ``map_file`` when the config was loaded (never written back).
    map_channels: list[ModbusChannel] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _load_map_file(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if "map_channels" in data:
            raise ValueError("map_channels is not a config key (channels come from map_file or channels)")
        if not data.get("map_file"):
            return data
        config_path = (info.context or {}).get("config_path")
        base = Path(config_path).parent if config_path and not config_path.startswith("<") else Path.cwd()
        path = Path(str(data["map_file"])).expanduser()
        if not path.is_absolute():
            path = base / path
        return {**data, "map_file": str(path), "map_channels": load_map_file(path)}

    @property
    def all_channels(self) -> list[ModbusChannel]:
        """The effective register map: the map file's channels, then the inline ones."""
        return [*self.map_channels, *self.channels]

    @property
    def is_tcp(self) -> bool:
        return urlsplit(self.port).scheme == "tcp"

    def bus(self) -> str | None:
        # A TCP server takes several connections; a serial bus has one master.
        return None if self.is_tcp else self.port

    def unit_ids(self) -> list[int]:
        return sorted({self.unit_id if c.unit_id is None else c.unit_id for c in self.all_channels})

    def per_request_timeout_s(self) -> float:
        if self.request_timeout_s is not None:
            return self.request_timeout_s
        return self.timeout_s / (2 * len(self.unit_ids()))

    @model_validator(mode="after")
    def _check_map(self) -> ModbusConfig:
        if self.is_tcp:
            parts = urlsplit(self.port)
            if not parts.hostname or parts.port is None:
                raise ValueError(f"port {self.port!r}: expected tcp://HOST:PORT")
        if not self.all_channels:
            raise ValueError("no channels: give map_file or [[instruments.channels]]")
        names: set[str] = set()
        for ch in self.all_channels:
            if ch.name in names:
                source = f" (channels of map_file {self.map_file!r} and inline)" if self.map_file else ""
                raise ValueError(f"duplicate channel name {ch.name!r}{source}")
            names.add(ch.name)
        if self.request_timeout_s is not None and self.request_timeout_s > self.timeout_s:
            raise ValueError(
                f"request_timeout_s ({self.request_timeout_s:g}) must not exceed "
                f"timeout_s ({self.timeout_s:g})"
            )
        return self


def load_map_file(path: Path) -> list[dict[str, Any]]:
    """The channels of a register map file, each checked.

    The file holds either ``[[channels]]`` tables, or a whole config with exactly one
    ``modbus`` instrument, whose ``[[instruments.channels]]`` are taken (so a runnable
    worked example can be every other config's map). ``ValueError`` names the file and the
    key path of the first problem.
    """
    where = f"map_file {str(path)!r}"
    try:
        parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: not valid TOML: {exc}") from None
    prefix = "channels"
    if "instruments" in parsed:
        found = [
            (i, inst)
            for i, inst in enumerate(parsed["instruments"] if isinstance(parsed["instruments"], list) else [])
            if isinstance(inst, dict) and inst.get("kind") == "modbus"
        ]
        if len(found) != 1:
            raise ValueError(f"{where}: a config used as a map needs exactly one modbus instrument")
        index, inst = found[0]
        if inst.get("map_file"):
            raise ValueError(f"{where}: instruments[{index}] names a map_file itself")
        channels, prefix = inst.get("channels"), f"instruments[{index}].channels"
    else:
        unknown = sorted(set(parsed) - {"description", "channels"})
        if unknown:
            raise ValueError(f"{where}: unknown top-level key {unknown[0]!r}")
        channels = parsed.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{where}: expected one or more [[{prefix}]] tables")
    for i, ch in enumerate(channels):
        try:
            ModbusChannel.model_validate(ch)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            raise ValueError(
                f"{where}: {prefix}[{i}]{key}: {err['msg']} (got {err.get('input')!r})"
            ) from None
    return channels


# -- the compiled plan -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Value:
    """One channel's place in a read: decode from this byte (or bit) offset."""

    channel: str
    unit: str
    start: int
    nbytes: int
    decode: Callable[[bytes, int], float]
    labels: dict[int, str] | None
    #: The value's own protocol address and width (registers, or 1 bit): to re-plan it alone.
    address: int
    width: int


@dataclasses.dataclass(slots=True)
class _Read:
    table: str
    function: int
    address: int
    count: int
    values: list[_Value]

    @property
    def channels(self) -> list[str]:
        return [v.channel for v in self.values]

    def halves(self) -> list[_Read]:
        """This read as two narrower ones (values in address order), each as short as it can be."""
        ordered = sorted(self.values, key=lambda v: v.address)
        middle = len(ordered) // 2
        return [self.narrowed(ordered[:middle]), self.narrowed(ordered[middle:])]

    def narrowed(self, values: list[_Value]) -> _Read:
        """A read of just ``values``: from the lowest address to the end of the highest value."""
        address = min(v.address for v in values)
        end = max(v.address + v.width for v in values)
        per_item = 1 if self.function <= 2 else 2  # bit offsets, or byte offsets of registers
        rebased = [dataclasses.replace(v, start=(v.address - address) * per_item) for v in values]
        return _Read(self.table, self.function, address, end - address, rebased)


@dataclasses.dataclass(slots=True)
class _Unit:
    unit_id: int
    reads: list[_Read]
    down: bool = False  # for logging transitions only
    error: str | None = None  # why it is down, for status

    @property
    def channels(self) -> list[str]:
        return [c for r in self.reads for c in r.channels]


def compile_plan(config: ModbusConfig) -> list[_Unit]:
    """The reads of one poll, per unit id, with each value's decoder worked out."""
    units: list[_Unit] = []
    for uid in config.unit_ids():
        reads: list[_Read] = []
        for table in ("coil", "discrete", "holding", "input"):
            chans = [
                c
                for c in config.all_channels
                if c.table == table and (config.unit_id if c.unit_id is None else c.unit_id) == uid
            ]
            if not chans:
                continue
            bits = is_bit_table(table)
            spans = [Span(i, c.address, 1 if bits else WIDTH[c.data_type]) for i, c in enumerate(chans)]
            limit = config.max_bits_per_request if bits else config.max_registers_per_request
            for req in plan_requests(spans, limit, config.max_gap):
                values = []
                for key in req.keys:
                    c = chans[key]
                    codec = ValueCodec(
                        c.data_type,
                        c.word_order or config.word_order,
                        c.byte_order or config.byte_order,
                        c.scale,
                        c.offset,
                        c.bit,
                    )
                    offset = c.address - req.address
                    labels = {int(k): v for k, v in c.enum.items()} if c.enum else None
                    start = offset if bits else 2 * offset
                    width = 1 if bits else WIDTH[c.data_type]
                    values.append(
                        _Value(
                            c.name, c.unit, start, 2 * codec.width, codec.decoder(), labels, c.address, width
                        )
                    )
                reads.append(_Read(table, READ_FUNCTION[table], req.address, req.count, values))
        units.append(_Unit(uid, reads))
    return units


class _Bus:
    """One RS-485 bus: a lock, and the end of the last frame for the inter-frame gap.

    An instrument owns its bus (the config refuses two instruments on one port, and the
    port is opened exclusively), so the bus lives with the driver.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.last_ns = 0


class _UnitFailed(Exception):
    """One read went wrong: ``reason`` is a :class:`Reason`; ``code`` a Modbus exception code."""

    def __init__(self, reason: str, message: str, code: int | None = None, raw: bytes | None = None):
        self.reason = reason
        self.message = message
        self.code = code
        self.raw = raw
        super().__init__(message)


class ModbusDriver(Driver):
    kind = "modbus"
    config_model = ModbusConfig
    streaming = False
    config: ModbusConfig
    write_commands: ClassVar[dict[str, str]] = {
        "set": "write CHANNEL=VALUE to a writable holding register or coil (engineering units)",
    }

    def __init__(self, config: ModbusConfig, clock: Clock):
        super().__init__(config, clock)
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
        #: channel -> why the server refuses its address (exception 2, isolated by splitting).
        self.refused: dict[str, str] = {}
        #: channel -> polls in a row in which its read was not sent (the poll's time was spent).
        self.starved: dict[str, int] = {}

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
    def plan(self) -> list[_Unit]:
        return self._plan

    # -- connection ------------------------------------------------------------------

    def _make_client(self) -> Any:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        cfg = self.config
        # reconnect_delay=0 and retries=0: the supervisor owns reconnects and retries.
        if cfg.is_tcp:
            parts = urlsplit(cfg.port)
            return AsyncModbusTcpClient(
                parts.hostname or "",
                port=parts.port or 502,
                name=self.name,
                reconnect_delay=0,
                timeout=self._timeout_s,
                retries=0,
            )
        s = cfg.serial
        return AsyncModbusSerialClient(
            cfg.port,
            framer=FramerType.RTU,
            baudrate=s.baudrate or 19200,
            bytesize=s.bytesize or 8,
            parity=s.parity or "E",
            stopbits=s.stopbits or 1,
            name=self.name,
            reconnect_delay=0,
            timeout=self._timeout_s,
            retries=0,
        )

    async def connect(self) -> DeviceInfo:
        if self._client is None or not self._client.connected:
            await self.close()
            client = self._make_client()
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

    async def _read(self, unit_id: int, read: _Read) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        c = self._connected_client()
        fn = {
            1: c.read_coils,
            2: c.read_discrete_inputs,
            3: c.read_holding_registers,
            4: c.read_input_registers,
        }[read.function]
        try:
            response = await self._execute(lambda: fn(read.address, count=read.count, device_id=unit_id))
        except ConnectionException as exc:
            raise ConnectError(f"{self.name}: {exc}") from exc
        except ModbusIOException as exc:
            if self._client is None or not self._client.connected:
                raise ConnectError(f"{self.name}: connection closed: {exc}") from exc
            raise _UnitFailed(
                Reason.TIMEOUT,
                f"unit {unit_id}: no valid reply to FC {read.function} at {read.address} "
                f"within {self._timeout_s:g} s",
            ) from exc
        fc = int(getattr(response, "function_code", 0))
        if fc not in (read.function, read.function | 0x80):
            # A late reply to an earlier request (after a timeout): the link is out of step.
            raise _UnitFailed(
                Reason.PARSE_ERROR,
                f"unit {unit_id}: a reply with FC {fc} to a request with FC {read.function}: out of step",
            )
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise _UnitFailed(
                Reason.DEVICE_ERROR,
                f"unit {unit_id}: Modbus exception {code} ({name}) to FC {read.function} "
                f"at {read.address} x{read.count}",
                code,
            )
        return response

    def _decode(self, unit_id: int, read: _Read, response: Any, acq_ns: int, mono_ns: int) -> list[Reading]:
        name = self.name
        out: list[Reading] = []
        if read.function <= 2:
            bits = response.bits
            if len(bits) < read.count:
                raise _UnitFailed(
                    Reason.PARSE_ERROR, f"unit {unit_id}: {len(bits)} bits in reply to a read of {read.count}"
                )
            for v in read.values:
                value = 1.0 if bits[v.start] else 0.0
                out.append(
                    Reading(
                        name,
                        v.channel,
                        value,
                        v.unit,
                        Quality.GOOD,
                        acq_ns,
                        mono_ns,
                        raw=b"\x01" if value else b"\x00",
                    )
                )
            return out
        registers = response.registers
        if len(registers) != read.count:
            raise _UnitFailed(
                Reason.PARSE_ERROR,
                f"unit {unit_id}: {len(registers)} registers in reply to a read of {read.count}",
                raw=registers_to_bytes(registers[:MAX_REGISTERS]),
            )
        data = registers_to_bytes(registers)
        for v in read.values:
            try:
                value = v.decode(data, v.start)
            except ProtocolError as exc:
                out.append(
                    Reading(name, v.channel, None, v.unit, Quality.BAD, acq_ns, mono_ns,
                            reason=Reason.PARSE_ERROR, raw=exc.raw,
                            attrs={"unit_id": unit_id, "error": exc.reason})
                )  # fmt: skip
                continue
            attrs = None
            if v.labels is not None:
                text = v.labels.get(int(value))
                attrs = {"text": text} if text is not None else {"unmapped_state": True}
            out.append(
                Reading(name, v.channel, value, v.unit, Quality.GOOD, acq_ns, mono_ns,
                        raw=data[v.start : v.start + v.nbytes], attrs=attrs)
            )  # fmt: skip
        return out

    def _unit_bad(self, unit: _Unit, reads: list[_Read], failure: _UnitFailed) -> list[Reading]:
        now, mono = self.clock.time_ns(), self.clock.monotonic_ns()
        attrs: dict[str, Any] = {"unit_id": unit.unit_id, "error": failure.message}
        if failure.code is not None:
            attrs["exception_code"] = failure.code
        return [
            Reading(
                self.name,
                v.channel,
                None,
                v.unit,
                Quality.BAD,
                now,
                mono,
                failure.reason,
                raw=failure.raw,
                attrs=attrs,
            )
            for r in reads
            for v in r.values
        ]

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
        out_of_step: _UnitFailed | None = None
        clock = self.clock
        budget_end = self.poll_deadline(deadline).mono_ns
        request_ns = int(self._timeout_s * 1e9)
        back: list[str] = []
        again: list[str] = []
        for unit in self._plan:
            failed = False
            refused_reads: list[_Read] = []
            queue = collections.deque(unit.reads)
            while queue:
                read = queue.popleft()
                if sent and clock.monotonic_ns() + request_ns > budget_end:
                    late = _UnitFailed(
                        Reason.TIMEOUT,
                        f"unit {unit.unit_id}: FC {read.function} at {read.address} not sent: "
                        f"the poll's {self.config.timeout_s:g} s were spent",
                    )
                    unsent = [read, *queue]
                    out.extend(self._unit_bad(unit, unsent, late))
                    self._starve(unit, unsent)
                    break
                sent += 1
                try:
                    response = await self._read(unit.unit_id, read)
                    acq_ns, mono_ns = clock.time_ns(), clock.monotonic_ns()
                    answered += 1
                    out.extend(self._decode(unit.unit_id, read, response, acq_ns, mono_ns))
                    self._fed(read, back, again)
                except _UnitFailed as failure:
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
                        out.extend(self._unit_bad(unit, [read], failure))
                        self._refuse(unit, read, failure)
                        self._fed(read, back, again, keep_refused=True)
                        continue
                    failed = True
                    if failure.reason == Reason.PARSE_ERROR:
                        out_of_step = failure
                    if failure.reason == Reason.TIMEOUT or failure.code in _UNIT_DOWN_CODES:
                        # The unit is silent or reported itself down: skip its other reads.
                        out.extend(self._unit_bad(unit, [read, *queue], failure))
                        timed_out += failure.reason == Reason.TIMEOUT
                        self._unit_state(unit, True, failure)
                        break
                    out.extend(self._unit_bad(unit, [read], failure))
                    answered += failure.reason != Reason.PARSE_ERROR
                    self._unit_state(unit, True, failure)
            else:
                if refused_reads:
                    # Every half was answered or refused: read the rest in blocks again.
                    self._recoalesce(unit, refused_reads)
            if not failed:
                self._unit_state(unit, False, None)
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

    def _recoalesce(self, unit: _Unit, refused_reads: list[_Read]) -> None:
        """Plan a table's reads again once its refused addresses are known.

        Only tables in which a read was split (``refused_reads``: the reads of several values
        that were answered with exception 2) are re-planned: each refused value alone, the
        others coalesced without reading across any hole (``max_gap`` is not used here: an
        address that is in no channel may be the one refused). Should a new read still cover
        one that was refused (a device that refuses reads across some internal boundary), the
        table keeps the narrower reads the search found to work.
        """
        cfg = self.config
        refused = self.refused
        split_functions = {r.function for r in refused_reads}
        reads: list[_Read] = []
        by_function: dict[int, list[_Read]] = {}
        for r in unit.reads:
            by_function.setdefault(r.function, []).append(r)
        for function, group in by_function.items():
            if function not in split_functions:
                reads.extend(group)
                continue
            model = group[0]
            values = sorted((v for r in group for v in r.values), key=lambda v: v.address)
            cuts = sorted(
                {a for v in values if v.channel in refused for a in range(v.address, v.address + v.width)}
            )
            planned: list[_Read] = []
            segments: dict[int, list[_Value]] = {}
            for v in values:
                covered = [a for a in cuts if v.address <= a < v.address + v.width]
                if v.channel in refused or covered:
                    planned.append(model.narrowed([v]))
                    continue
                # Values between the same two refused addresses may share a read.
                segments.setdefault(sum(a < v.address for a in cuts), []).append(v)
            limit = cfg.max_bits_per_request if function <= 2 else cfg.max_registers_per_request
            for segment in segments.values():
                spans = [Span(i, v.address, v.width) for i, v in enumerate(segment)]
                for req in plan_requests(spans, limit, 0):
                    planned.append(model.narrowed([segment[k] for k in req.keys]))
            if any(
                new.address <= old.address and old.address + old.count <= new.address + new.count
                for new in planned
                if len(new.values) > 1
                for old in refused_reads
                if old.function == function
            ):
                planned = group
            reads.extend(planned)
        order = {t: i for i, t in enumerate(("coil", "discrete", "holding", "input"))}
        unit.reads = sorted(reads, key=lambda r: (order[r.table], r.address))

    def _starve(self, unit: _Unit, reads: list[_Read]) -> None:
        """Count polls in which these reads were not sent; log when a channel starts starving."""
        newly = []
        for read in reads:
            for channel in read.channels:
                count = self.starved.get(channel, 0)
                self.starved[channel] = count + 1
                if count == 0:
                    newly.append(channel)
        if newly:
            log.warning(
                "modbus channels starved: the poll's time was spent before their reads",
                instrument=self.name,
                unit_id=unit.unit_id,
                channels=newly,
                timeout_s=self.config.timeout_s,
            )

    def _fed(self, read: _Read, back: list[str], again: list[str], *, keep_refused: bool = False) -> None:
        """The read was answered: its channels are no longer starved (nor refused); those
        that were go to ``back`` and ``again``, logged once at the end of the poll."""
        back.extend(c for c in read.channels if self.starved.pop(c, 0))
        if not keep_refused:
            again.extend(c for c in read.channels if self.refused.pop(c, None) is not None)

    def _refuse(self, unit: _Unit, read: _Read, failure: _UnitFailed) -> None:
        """Remember a channel whose own address the server refuses; log it once."""
        channel = read.channels[0]
        if channel in self.refused:
            return
        self.refused[channel] = (
            f"unit {unit.unit_id} {read.table} {read.address} x{read.count}: "
            f"exception {failure.code} ({EXCEPTION_NAMES.get(failure.code or 0, 'unknown exception')})"
        )
        log.warning(
            "modbus address refused; the rest of its block is read without it",
            instrument=self.name,
            unit_id=unit.unit_id,
            channel=channel,
            table=read.table,
            address=read.address,
            exception_code=failure.code,
        )

    def problems(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.starved:
            out["starved"] = dict(self.starved)
        if self.refused:
            out["refused_addresses"] = dict(self.refused)
        failing = {str(u.unit_id): u.error or "failing" for u in self._plan if u.down}
        if failing:
            out["units_failing"] = failing
        return out

    def _unit_state(self, unit: _Unit, down: bool, failure: _UnitFailed | None) -> None:
        unit.error = failure.message if down and failure is not None else None
        if down == unit.down:
            return
        unit.down = down
        if down and failure is not None:
            log.warning(
                "modbus unit failing", instrument=self.name, unit_id=unit.unit_id, error=failure.message
            )
        else:
            log.info("modbus unit answering again", instrument=self.name, unit_id=unit.unit_id)

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
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        try:
            return await self._execute(call)
        except ConnectionException as exc:
            raise ConnectError(f"{self.name}: {exc}") from exc
        except ModbusIOException as exc:
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


__all__ = ["ModbusChannel", "ModbusConfig", "ModbusDriver", "compile_plan"]
