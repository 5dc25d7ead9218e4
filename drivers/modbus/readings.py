"""Readings of one Modbus poll: the values of an answered read, and BAD records of a failed one."""

from __future__ import annotations

from typing import Any

from daq.errors import ProtocolError
from daq.model import GOOD, Quality, Reading, Reason
from drivers.modbus.codec import MAX_REGISTERS, registers_to_bytes
from drivers.modbus.errors import UnitFailed
from drivers.modbus.plan import PlannedRead, UnitPlan


def decode(
    name: str, unit_id: int, read: PlannedRead, response: Any, acq_ns: int, mono_ns: int
) -> list[Reading]:
    """The readings of one answered read, stamped with its arrival; a reply of the wrong
    length raises :class:`UnitFailed` (``parse_error``), a value that does not decode is BAD."""
    out: list[Reading] = []
    if read.function <= 2:
        bits = response.bits
        if len(bits) < read.count:
            raise UnitFailed(
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
                    GOOD,
                    acq_ns,
                    mono_ns,
                    raw=b"\x01" if value else b"\x00",
                )
            )
        return out
    registers = response.registers
    if len(registers) != read.count:
        raise UnitFailed(
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
            Reading(name, v.channel, value, v.unit, GOOD, acq_ns, mono_ns,
                    raw=data[v.start : v.start + v.nbytes], attrs=attrs)
        )  # fmt: skip
    return out


def unit_bad(
    name: str, now: int, mono: int, unit: UnitPlan, reads: list[PlannedRead], failure: UnitFailed
) -> list[Reading]:
    """One BAD reading per channel of ``reads``, with the failure's reason, message and code."""
    attrs: dict[str, Any] = {"unit_id": unit.unit_id, "error": failure.message}
    if failure.code is not None:
        attrs["exception_code"] = failure.code
    return [
        Reading(
            name,
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
