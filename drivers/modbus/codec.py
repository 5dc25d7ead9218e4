"""Modbus register decoding and request planning, free of I/O.

Word and byte order (the value ``0x11223344`` as a 32-bit quantity in two registers):

==============  ==============  =========================  ================
``word_order``  ``byte_order``  registers on the wire      common name
==============  ==============  =========================  ================
big             big             ``[0x1122, 0x3344]``       ABCD (Modbus spec)
little          big             ``[0x3344, 0x1122]``       CDAB (word swap)
big             little          ``[0x2211, 0x4433]``       BADC (byte swap)
little          little          ``[0x4433, 0x2211]``       DCBA
==============  ==============  =========================  ================

``byte_order`` applies to 16-bit types too (a byte-swapped single register). Registers
travel big-endian on the wire (Modbus Application Protocol V1.1b3, section 4.2), so a
response's data bytes are the registers in order, high byte first.

The engineering value is ``raw * scale + offset``; ``bool`` channels (coils, discrete
inputs, a non-zero register) and ``bit`` channels read 1.0 or 0.0 and ignore scale and offset.

:func:`plan_requests` coalesces the channels of one unit id and table into the fewest
requests within the protocol limits (125 registers, 2000 bits per read).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from daq.errors import ProtocolError

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit"]
Order = Literal["big", "little"]

#: Read function code of each table (Modbus Application Protocol V1.1b3, section 6).
READ_FUNCTION: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
#: Protocol limits of one read (section 6.1 to 6.4): 2000 bits, 125 registers.
MAX_BITS = 2000
MAX_REGISTERS = 125

#: Registers each type occupies, and its struct format (big-endian).
WIDTH: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1, "bit": 1,
}  # fmt: skip
_FORMAT: dict[str, str] = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "float64": ">d",
}  # fmt: skip

BIT_TABLES = frozenset({"coil", "discrete"})


def is_bit_table(table: str) -> bool:
    return table in BIT_TABLES


def byte_permutation(words: int, word_order: str, byte_order: str) -> tuple[int, ...]:
    """Indices into the wire bytes that give the value's big-endian bytes."""
    order = range(words) if word_order == "big" else range(words - 1, -1, -1)
    perm: list[int] = []
    for w in order:
        perm.extend((2 * w, 2 * w + 1) if byte_order == "big" else (2 * w + 1, 2 * w))
    return tuple(perm)


@dataclasses.dataclass(frozen=True, slots=True)
class ValueCodec:
    """How to turn the wire bytes of one value into its engineering value, and back."""

    type: str
    word_order: str = "big"
    byte_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    def _perm(self) -> tuple[int, ...]:
        return byte_permutation(self.width, self.word_order, self.byte_order)

    def decode(self, data: bytes, start: int = 0) -> float:
        """The value whose registers begin at byte ``start`` of ``data`` (register bytes).

        Raises :class:`ProtocolError` when ``data`` is too short or the value is not finite
        (a NaN or infinity from a PLC is a fault, not a measurement).
        """
        return self.decoder()(data, start)

    def decoder(self) -> Callable[[bytes, int], float]:
        """:meth:`decode` with the byte order and format worked out once (the poll path)."""
        n = 2 * self.width
        kind, scale, offset = self.type, self.scale, self.offset

        def short(raw: bytes) -> ProtocolError:
            return ProtocolError(f"{kind} needs {n} bytes, got {len(raw)}", raw=bytes(raw))

        if kind == "bool":

            def decode_bool(data: bytes, start: int) -> float:
                raw = data[start : start + n]
                if len(raw) != n:
                    raise short(raw)
                return 1.0 if raw != b"\x00\x00" else 0.0

            return decode_bool
        if kind == "bit":
            shift = self.bit or 0
            endian: Literal["big", "little"] = "big" if self.byte_order == "big" else "little"

            def decode_bit(data: bytes, start: int) -> float:
                raw = data[start : start + n]
                if len(raw) != n:
                    raise short(raw)
                return float((int.from_bytes(raw, endian) >> shift) & 1)

            return decode_bit
        unpack = struct.Struct(_FORMAT[kind]).unpack
        perm = self._perm()
        identity = perm == tuple(range(n))

        def decode_number(data: bytes, start: int) -> float:
            raw = data[start : start + n]
            if len(raw) != n:
                raise short(raw)
            value = float(unpack(raw if identity else bytes(raw[i] for i in perm))[0])
            if value != value or value in (math.inf, -math.inf):
                raise ProtocolError(f"{kind} value is not finite ({value})", raw=bytes(raw))
            return value * scale + offset

        return decode_number

    def encode(self, value: float) -> list[int]:
        """Registers carrying engineering ``value``; raises ``ValueError`` if out of range."""
        if self.type in ("bool", "bit"):
            raise ValueError(f"{self.type} channels are not written as registers")
        if not math.isfinite(value):
            raise ValueError(f"value {value} is not finite")
        raw = (value - self.offset) / self.scale
        fmt = _FORMAT[self.type]
        if self.type.startswith(("int", "uint")):
            raw = round(raw)
            try:
                packed = struct.pack(fmt, int(raw))
            except struct.error:
                raise ValueError(f"{value} does not fit in {self.type} (raw {raw})") from None
        else:
            packed = struct.pack(fmt, raw)
            if self.type == "float32" and not math.isfinite(struct.unpack(fmt, packed)[0]):
                raise ValueError(f"{value} does not fit in float32")
        perm = self._perm()
        wire = bytearray(len(packed))
        for value_index, wire_index in enumerate(perm):
            wire[wire_index] = packed[value_index]
        return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """The data bytes of a register response (each register high byte first)."""
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        raise ProtocolError(f"register out of range: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """What a channel occupies: ``count`` registers (or bits) from ``address``."""

    key: int
    address: int
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One read request: ``count`` items from ``address``; ``keys`` are the spans it covers."""

    address: int
    count: int
    keys: tuple[int, ...]


def plan_requests(spans: Iterable[Span], max_count: int, max_gap: int = 0) -> list[Request]:
    """Coalesce spans into the fewest requests of at most ``max_count`` items.

    Spans that touch or overlap share a request; a hole of up to ``max_gap`` items may be
    read across (off by default: many devices answer a read over an undefined address with
    exception 2). A span is never split between requests. Greedy left to right is optimal
    here: each request starts at the first uncovered span and reaches as far as it can.
    """
    ordered = sorted(spans, key=lambda s: (s.address, s.count))
    requests: list[Request] = []
    start = end = -1
    keys: list[int] = []
    for s in ordered:
        if s.count > max_count:
            raise ValueError(f"a value of {s.count} items exceeds one request ({max_count})")
        s_end = s.address + s.count
        if keys and s.address <= end + max_gap and max(end, s_end) - start <= max_count:
            end = max(end, s_end)
            keys.append(s.key)
            continue
        if keys:
            requests.append(Request(start, end - start, tuple(keys)))
        start, end, keys = s.address, s_end, [s.key]
    if keys:
        requests.append(Request(start, end - start, tuple(keys)))
    return requests
