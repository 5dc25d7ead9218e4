"""The hash chain: one canonical byte encoding per row, shared by writer and verifier.

``hash(row) = SHA-256(hash(previous row) || payload(row))``; the first row of a table
chains to :data:`GENESIS`. Changing, inserting or deleting any row breaks the chain at that
row or the next one.

Two payload encodings exist; a journal records the one it is written with in
``meta.chain_payload`` (a journal without that key was written with version 1), and an export
copies it into its manifest, so both stay verifiable:

- version 2 (:data:`PAYLOAD_VERSION`, every new journal): each column is a type tag (``N``
  NULL, ``i`` integer, ``f`` float, ``s`` text, ``b`` blob), the length of its data as 8 bytes
  big-endian, then the data (decimal digits, the IEEE 754 double big-endian, UTF-8, the bytes).
  Two different rows therefore always give two different payloads: the integer 1 and the text
  "1" differ by their tag, and no text can imitate a column boundary.
- version 1: columns joined with a separator that text is not prevented from containing, and
  values rendered without their type, so distinct rows could share a payload.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections.abc import Callable
from typing import Any

GENESIS = bytes(32)

#: The payload encoding new journals are written with.
PAYLOAD_VERSION = 2
PAYLOAD_VERSIONS = (1, 2)
#: The ``meta`` key holding a journal's payload version.
META_KEY = "chain_payload"

Payload = Callable[[tuple[Any, ...]], bytes]
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

_LEN = struct.Struct(">Q")
_DOUBLE = struct.Struct(">d")


_NULL_V2 = b"N" + _LEN.pack(0)
_FLOAT_V2 = b"f" + _LEN.pack(_DOUBLE.size)


def typed_payload(row: tuple[Any, ...]) -> bytes:
    """Version 2: each column type-tagged and length-prefixed. A value of another type raises
    TypeError."""
    # Written for speed (the journal writer encodes every row): one list, one join, no calls
    # per column beyond the encoding itself.
    parts: list[bytes] = []
    append = parts.append
    pack = _LEN.pack
    for v in row:
        t = type(v)
        if t is str:
            data = v.encode()
            append(b"s" + pack(len(data)) + data)
        elif t is int:
            data = b"%d" % v
            append(b"i" + pack(len(data)) + data)
        elif v is None:
            append(_NULL_V2)
        elif t is float:
            append(_FLOAT_V2 + _DOUBLE.pack(v))
        elif isinstance(v, (bytes, bytearray, memoryview)):
            data = bytes(v)
            append(b"b" + pack(len(data)) + data)
        elif isinstance(v, int):  # a bool (SQLite stores and returns 0 or 1) or an IntEnum
            data = b"%d" % int(v)
            append(b"i" + pack(len(data)) + data)
        elif isinstance(v, float):
            append(_FLOAT_V2 + _DOUBLE.pack(float(v)))
        elif isinstance(v, str):
            data = str(v).encode()
            append(b"s" + pack(len(data)) + data)
        else:
            raise TypeError(f"a {t.__name__} cannot be hashed (NULL, int, float, str or bytes)")
    return b"".join(parts)


def _reading_payload_v2(row: tuple[Any, ...]) -> bytes:
    # ``value`` (8th) is the journal's one REAL column: SQLite hands an integer stored there
    # back as a float, so it is hashed as one (text there raises ValueError: altered).
    value = row[7]
    middle = _NULL_V2 if value is None else _FLOAT_V2 + _DOUBLE.pack(float(value))
    return typed_payload(row[:7]) + middle + typed_payload(row[8:])


def payload_for(table: str, version: int) -> Payload:
    """The payload encoding of ``table`` in a journal written with payload ``version``."""
    if version == 2:
        return _reading_payload_v2 if table == "readings" else typed_payload
    if version == 1:
        return _PAYLOADS.get(table, generic_payload)
    raise ValueError(f"unknown hash payload version {version!r} (known: {PAYLOAD_VERSIONS})")


def payload_version(conn: sqlite3.Connection) -> int:
    """The payload version of the journal open on ``conn`` (1 when it records none)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    except sqlite3.OperationalError:  # no meta table yet: an empty file
        return PAYLOAD_VERSION
    return int(row[0]) if row else 1


def link(previous: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(previous + payload).digest()
