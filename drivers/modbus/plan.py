"""The register map compiled into the reads of one poll: per unit id and table, contiguous
addresses coalesced into the fewest reads within the protocol limits, each value with its
decoder; a read split in halves to isolate a refused address."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from drivers.modbus.codec import READ_FUNCTION, WIDTH, Span, ValueCodec, is_bit_table, plan_requests
from drivers.modbus.config import ModbusConfig

# -- the compiled plan -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class PlannedValue:
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
class PlannedRead:
    table: str
    function: int
    address: int
    count: int
    values: list[PlannedValue]

    @property
    def channels(self) -> list[str]:
        return [v.channel for v in self.values]

    def halves(self) -> list[PlannedRead]:
        """This read as two narrower ones (values in address order), each as short as it can be."""
        ordered = sorted(self.values, key=lambda v: v.address)
        middle = len(ordered) // 2
        return [self.narrowed(ordered[:middle]), self.narrowed(ordered[middle:])]

    def narrowed(self, values: list[PlannedValue]) -> PlannedRead:
        """A read of just ``values``: from the lowest address to the end of the highest value."""
        address = min(v.address for v in values)
        end = max(v.address + v.width for v in values)
        per_item = 1 if self.function <= 2 else 2  # bit offsets, or byte offsets of registers
        rebased = [dataclasses.replace(v, start=(v.address - address) * per_item) for v in values]
        return PlannedRead(self.table, self.function, address, end - address, rebased)


@dataclasses.dataclass(slots=True)
class UnitPlan:
    unit_id: int
    reads: list[PlannedRead]
    down: bool = False  # for logging transitions only
    error: str | None = None  # why it is down, for status

    @property
    def channels(self) -> list[str]:
        return [c for r in self.reads for c in r.channels]


def compile_plan(config: ModbusConfig) -> list[UnitPlan]:
    """The reads of one poll, per unit id, with each value's decoder worked out."""
    units: list[UnitPlan] = []
    for uid in config.unit_ids():
        reads: list[PlannedRead] = []
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
                        PlannedValue(
                            c.name, c.unit, start, 2 * codec.width, codec.decoder(), labels, c.address, width
                        )
                    )
                reads.append(PlannedRead(table, READ_FUNCTION[table], req.address, req.count, values))
        units.append(UnitPlan(uid, reads))
    return units
