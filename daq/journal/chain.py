"""The hash chain: one canonical byte encoding per row, shared by writer and verifier.

``hash(row) = SHA-256(hash(previous row) || payload(row))``; the first row of a table
chains to :data:`GENESIS`. Changing, inserting or deleting any row breaks the chain at that
row or the next one. The encoding is positional with an unambiguous marker for NULL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

GENESIS = bytes(32)
_SEP = "\x1f"
_NULL = "\x00"


def _s(value: Any) -> str:
    return _NULL if value is None else str(value)


def _f(value: float | None) -> str:
    return _NULL if value is None else repr(float(value))


def reading_payload(row: tuple[Any, ...]) -> bytes:
    """``row`` is ``(id, instrument, channel, seq, acq_ns, mono_ns, device_ns, value, unit,
    quality, reason, raw, attrs, run_id)``, the column order of the ``readings`` table."""
    (rid, instrument, channel, seq, acq_ns, mono_ns, device_ns, value, unit, quality, reason, raw,
     attrs, run_id) = row  # fmt: skip
    text = (
        f"{rid}{_SEP}{instrument}{_SEP}{channel}{_SEP}{seq}{_SEP}{acq_ns}{_SEP}{mono_ns}{_SEP}"
        f"{_s(device_ns)}{_SEP}{_f(value)}{_SEP}{unit}{_SEP}{quality}{_SEP}{_s(reason)}{_SEP}"
        f"{_s(attrs)}{_SEP}{_s(run_id)}{_SEP}{_NULL if raw is None else len(raw)}{_SEP}"
    )
    return text.encode() + (raw or b"")


def event_payload(row: tuple[Any, ...]) -> bytes:
    """``(id, instrument, kind, ts_ns, mono_ns, detail, raw)``."""
    rid, instrument, kind, ts_ns, mono_ns, detail, raw = row
    text = (
        f"{rid}{_SEP}{instrument}{_SEP}{kind}{_SEP}{ts_ns}{_SEP}{mono_ns}{_SEP}{_s(detail)}{_SEP}"
        f"{_NULL if raw is None else len(raw)}{_SEP}"
    )
    return text.encode() + (raw or b"")


def audit_payload(row: tuple[Any, ...]) -> bytes:
    """``(id, ts_ns, mono_ns, actor, action, subject, detail, run_id)``."""
    return _SEP.join(_s(v) for v in row).encode()


def generic_payload(row: tuple[Any, ...]) -> bytes:
    """Encoding for chained tables without a dedicated one: each column in order; a blob
    appears as its length in the text and its bytes after it."""
    parts: list[str] = []
    blobs: list[bytes] = []
    for v in row:
        if v is None:
            parts.append(_NULL)
        elif isinstance(v, bytes):
            parts.append(f"b{len(v)}")
            blobs.append(v)
        elif isinstance(v, float):
            parts.append(repr(v))
        else:
            parts.append(str(v))
    return _SEP.join(parts).encode() + b"".join(blobs)


_PAYLOADS = {"readings": reading_payload, "events": event_payload, "audit": audit_payload}


def payload_for(table: str) -> Callable[[tuple[Any, ...]], bytes]:
    return _PAYLOADS.get(table, generic_payload)


def link(previous: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(previous + payload).digest()
