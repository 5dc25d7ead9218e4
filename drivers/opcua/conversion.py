"""An OPC UA DataValue as readings: quality from its StatusCode, timestamps, text states."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daq.model import BAD, GOOD, UNCERTAIN, Reading, Reason
from drivers.opcua.config import OpcUaNode

if TYPE_CHECKING:
    from asyncua import ua

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: OPC UA Part 4, 7.39.1: InfoType bits 10-11 (01 = DataValue) and the Overflow bit 7.
_INFOTYPE_MASK, _INFOTYPE_DATAVALUE, _OVERFLOW_BIT = 0x0C00, 0x0400, 0x0080
#: BadNodeIdInvalid, BadNodeIdUnknown: the node left the address space; it is resolved again.
NODE_GONE = frozenset({0x80330000, 0x80340000})


def to_ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def status_name(code: int) -> str:
    """The symbolic name of a StatusCode (``BadSensorFailure``), from asyncua's table.

    The low 16 bits (info type, overflow, limit bits) are not part of the name."""
    from asyncua.ua.status_codes import get_name_and_doc

    return str(get_name_and_doc(code & 0xFFFF0000)[0])


def convert(
    node: OpcUaNode, dv: ua.DataValue, now: int, mono: int, reading: Callable[..., Reading]
) -> list[Reading]:
    """One DataValue as a reading (two when the server flags its own queue overflow), built
    with the driver's ``reading`` (:meth:`drivers.base.Driver.reading`) and stamped ``now``."""
    status = dv.StatusCode
    code = status.value if status is not None else 0
    source_ns = to_ns(dv.SourceTimestamp)
    server_ns = to_ns(dv.ServerTimestamp)
    attrs: dict[str, Any] = {"source_ns": source_ns, "server_ns": server_ns}
    out: list[Reading] = []
    if code & _INFOTYPE_MASK == _INFOTYPE_DATAVALUE and code & _OVERFLOW_BIT:
        out.append(
            reading(
                node.channel, None, node.unit, quality=BAD, reason=Reason.OVERFLOW,
                device_ns=source_ns, acq_ns=now, mono_ns=mono,
                attrs={**attrs, "error": "the server's queue for this node overflowed"},
            )
        )  # fmt: skip
    severity = code >> 30
    if severity >= 2:
        attrs["status"] = f"0x{code:08X}"
        out.append(
            reading(
                node.channel, None, node.unit, quality=BAD,
                reason=status_name(code), device_ns=source_ns, acq_ns=now, mono_ns=mono,
                attrs=attrs,
            )
        )  # fmt: skip
        return out
    quality, reason = GOOD, None
    if severity == 1:
        quality, reason = UNCERTAIN, status_name(code)
        attrs["status"] = f"0x{code:08X}"
    raw = dv.Value.Value if dv.Value is not None else None
    value: float | None
    if isinstance(raw, bool | int | float):
        value = float(raw)
        if not math.isfinite(value):
            value, quality, reason = None, BAD, "not_finite"
            attrs["reported"] = repr(raw)
    elif isinstance(raw, str):
        attrs["text"] = raw
        value = node.states.get(raw)
        if value is None:
            quality = UNCERTAIN if quality is GOOD else quality
            reason = reason or "unmapped_text"
    else:
        value, quality, reason = None, BAD, "unsupported_type"
        attrs["reported"] = repr(raw)[:200]
    out.append(
        reading(
            node.channel, value, node.unit, quality=quality, reason=reason, device_ns=source_ns,
            acq_ns=now, mono_ns=mono, attrs=attrs,
        )
    )  # fmt: skip
    return out
