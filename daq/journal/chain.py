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
# Tag and length of every integer's decimal digits an int64 can have (at most 20 characters),
# looked up rather than packed: the writer encodes five or six integers per reading.
_INT_V2 = tuple(b"i" + _LEN.pack(n) for n in range(21))
# Encoded text columns, kept by value: instrument, channel and unit names repeat on every
# reading. Bounded; emptied when full (a cache, never a source of truth).
_TEXT_V2: dict[str, bytes] = {}
_TEXT_V2_MAX = 4096
_TEXT_V2_CACHED_LEN = 64


def _text_v2(v: str) -> bytes:
    data = v.encode()
    seg = b"s" + _LEN.pack(len(data)) + data
    if len(data) <= _TEXT_V2_CACHED_LEN:
        if len(_TEXT_V2) >= _TEXT_V2_MAX:
            _TEXT_V2.clear()
        _TEXT_V2[v] = seg
    return seg


def _encode_v2(parts: list[bytes], values: tuple[Any, ...], real_at: int) -> None:
    """Append the version 2 encoding of ``values`` to ``parts``; the column at index
    ``real_at`` (-1: none) is a REAL column and is encoded as a float whatever number it holds."""
    # Written for speed (the journal writer encodes every row): exact type checks first, the
    # common types in the order they occur, no call per column beyond the encoding itself.
    append = parts.append
    texts = _TEXT_V2
    ints = _INT_V2
    pack = _LEN.pack
    for index, v in enumerate(values):
        t = type(v)
        if index == real_at and v is not None:
            append(_FLOAT_V2)
            append(_DOUBLE.pack(float(v)))
        elif t is str:
            seg = texts.get(v)
            append(seg if seg is not None else _text_v2(v))
        elif t is int:
            data = b"%d" % v
            n = len(data)
            append(ints[n] if n <= 20 else b"i" + pack(n))
            append(data)
        elif v is None:
            append(_NULL_V2)
        elif t is float:
            append(_FLOAT_V2)
            append(_DOUBLE.pack(v))
        elif isinstance(v, (bytes, bytearray, memoryview)):
            data = bytes(v)
            append(b"b" + pack(len(data)))
            append(data)
        elif isinstance(v, int):  # a bool (SQLite stores and returns 0 or 1) or an IntEnum
            data = b"%d" % int(v)
            append(b"i" + pack(len(data)))
            append(data)
        elif isinstance(v, float):
            append(_FLOAT_V2)
            append(_DOUBLE.pack(float(v)))
        elif isinstance(v, str):
            append(_text_v2(str(v)))
        else:
            raise TypeError(f"a {t.__name__} cannot be hashed (NULL, int, float, str or bytes)")


def typed_payload(row: tuple[Any, ...]) -> bytes:
    """Version 2: each column type-tagged and length-prefixed. A value of another type raises
    TypeError."""
    parts: list[bytes] = []
    _encode_v2(parts, row, -1)
    return b"".join(parts)


#: The readings table's one REAL column (``value``): SQLite hands an integer stored there back
#: as a float, so it is hashed as one (text there raises ValueError: altered).
_READING_VALUE_AT = 7


def _reading_payload_v2(row: tuple[Any, ...]) -> bytes:
    if len(row) == 14:
        (rid, instrument, channel, seq, acq_ns, mono_ns, device_ns, value, unit, quality, reason, raw,
         attrs, run_id) = row  # fmt: skip
        # The shapes canonical readings have (what the writer hashes, every reading), encoded in
        # one expression; anything else (a row read back for verification, possibly altered)
        # takes the general path, which gives the same bytes for these shapes (tested).
        if (
            type(rid) is int and type(seq) is int and type(acq_ns) is int and type(mono_ns) is int
            and type(quality) is int and type(instrument) is str and type(channel) is str
            and type(unit) is str and (device_ns is None or type(device_ns) is int)
            and (value is None or type(value) is float) and (reason is None or type(reason) is str)
            and (raw is None or type(raw) is bytes) and (attrs is None or type(attrs) is str)
            and (run_id is None or type(run_id) is str)
        ):  # fmt: skip
            try:
                return _canonical_reading_payload_v2(row)
            except IndexError:  # an integer beyond int64 (not from the writer): general path
                pass
    parts: list[bytes] = []
    _encode_v2(parts, row, _READING_VALUE_AT)
    return b"".join(parts)


def _canonical_reading_payload_v2(row: tuple[Any, ...]) -> bytes:
    """The version 2 payload of the row of a canonical reading (:func:`daq.journal.codec.row` of
    a reading :mod:`daq.canonical` accepted): every column already of the type the checks of
    :func:`_reading_payload_v2` ask for, and every integer within int64. The writer hashes each
    reading with this, the checks being the canonical rules' own; the verifier goes through the
    checks, to these same bytes."""
    (rid, instrument, channel, seq, acq_ns, mono_ns, device_ns, value, unit, quality, reason, raw,
     attrs, run_id) = row  # fmt: skip
    texts, ints = _TEXT_V2, _INT_V2
    d_rid, d_seq, d_acq, d_mono, d_q = (
        b"%d" % rid,
        b"%d" % seq,
        b"%d" % acq_ns,
        b"%d" % mono_ns,
        b"%d" % quality,
    )
    return b"".join((
        ints[len(d_rid)], d_rid,
        texts.get(instrument) or _text_v2(instrument),
        texts.get(channel) or _text_v2(channel),
        ints[len(d_seq)], d_seq, ints[len(d_acq)], d_acq, ints[len(d_mono)], d_mono,
        _NULL_V2 if device_ns is None else _int_v2(device_ns),
        _NULL_V2 if value is None else _FLOAT_V2 + _DOUBLE.pack(value),
        texts.get(unit) or _text_v2(unit),
        ints[len(d_q)], d_q,
        _NULL_V2 if reason is None else (texts.get(reason) or _text_v2(reason)),
        _NULL_V2 if raw is None else b"b" + _LEN.pack(len(raw)) + raw,
        _NULL_V2 if attrs is None else (texts.get(attrs) or _text_v2(attrs)),
        _NULL_V2 if run_id is None else (texts.get(run_id) or _text_v2(run_id)),
    ))  # fmt: skip


def _int_v2(v: int) -> bytes:
    data = b"%d" % v
    return b"i" + _LEN.pack(len(data)) + data


def payload_for(table: str, version: int, *, canonical_rows: bool = False) -> Payload:
    """The payload encoding of ``table`` in a journal written with payload ``version``.

    ``canonical_rows``: every row given is the row of a canonical record (the writer's case),
    so the readings encoder may skip its type checks; the bytes are the same."""
    if version == 2:
        if table == "readings":
            return _canonical_reading_payload_v2 if canonical_rows else _reading_payload_v2
        return typed_payload
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
