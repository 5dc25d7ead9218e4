"""The register map compiled into the reads of one poll: per unit id and table, contiguous
addresses coalesced into the fewest reads within the protocol limits, each value with its
decoder; a read split in halves to isolate a refused address, and the plan made again around
the addresses found refused (:func:`recoalesce`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container

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


def recoalesce(
    unit: UnitPlan, refused_reads: list[PlannedRead], refused: Container[str], cfg: ModbusConfig
) -> None:
    """Plan a table's reads again once its refused addresses are known.

    Only tables in which a read was split (``refused_reads``: the reads of several values
    that were answered with exception 2) are re-planned: each refused value alone, the
    others coalesced without reading across any hole (``max_gap`` is not used here: an
    address that is in no channel may be the one refused). Should a new read still cover
    one that was refused (a device that refuses reads across some internal boundary), the
    table keeps the narrower reads the search found to work.
    """
    split_functions = {r.function for r in refused_reads}
    reads: list[PlannedRead] = []
    by_function: dict[int, list[PlannedRead]] = {}
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
        planned: list[PlannedRead] = []
        segments: dict[int, list[PlannedValue]] = {}
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
