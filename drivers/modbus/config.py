"""The ``[[instruments]]`` table of a Modbus instrument and its register map (inline or a file)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from daq.config.base import Decimals, PositiveSeconds, SerialInstrument, StrictModel
from drivers.modbus.codec import MAX_BITS, MAX_REGISTERS, WIDTH, is_bit_table

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
    #: Digits shown after the decimal point (the live page); default: from the unit.
    decimals: Decimals | None = None

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
