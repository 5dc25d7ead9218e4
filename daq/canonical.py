"""Canonicalisation: the one stage every record passes before the journal hashes or stores it.

The journal hashes a text encoding of each row and SQLite stores the row; verification
later re-hashes what SQLite gives back. A value survives that round trip bit for bit only
if it is already in the form SQLite and UTF-8 keep. This module puts every value in that
form, *before* the hash, and says in a note what it had to change. Every record passes it
once, whatever path brought it (drivers, supervisors, services, the CLI, the local API): a
reading at the head of the reading pipeline (:mod:`daq.pipeline`), so every stage sees what
will be journaled, and which :func:`checked` then marks as checked; every other record, and
any reading not marked, in the journal writer (:mod:`daq.journal.batch`) just before it is
hashed.

The module is longer than most (about 500 lines) because each rule and the fast check that
lets a canonical record through unchanged must stay side by side: a rule changed without its
check would let a value through unconverted (a property test compares the two).

The rules (also in ``docs/data-integrity.md``):

* **Text** is valid UTF-8. A lone surrogate (what Python makes of undecodable bytes in
  argv, headers or file names, or ``"\\ud800"`` in JSON) is kept *visibly escaped*, never
  dropped: ``\\xNN`` for an undecodable byte (a ``surrogateescape`` surrogate), ``\\uXXXX``
  for any other lone surrogate. ``bytes`` given where text belongs are decoded the same way.
* **Numbers** are finite. A reading whose value is NaN, an infinity, too large for a double
  or not a number at all becomes BAD with reason ``non_finite_value`` and no value; its raw
  frame is kept and the refused value is noted. ``-0.0`` is stored as ``0.0`` (SQLite does
  so anyway; the hash must see the same).
* **Timestamps** lie between 1970-01-01 and 2200-01-01 (UTC). Outside that range (OPC UA's
  null DateTime, 1601-01-01, is -11644473600000000000 ns) a timestamp becomes "no
  timestamp": ``device_ns`` and the ``attrs`` timestamps named in :data:`ATTR_TIMESTAMPS`
  become ``None``; the acquisition or event time, which the journal cannot leave empty, is
  replaced by the time the journal took the record (and kept as found in the note).
* **Integers** fit SQLite's signed 64 bits. A larger one in ``attrs``/``detail`` is kept as
  decimal text with a note; ``mono_ns`` outside the range takes the journal's monotonic time.
* **attrs and detail** are JSON objects: keys are text (named the way JSON names them),
  tuples become lists, floats are finite (a non-finite one is kept as the text ``nan``,
  ``inf`` or ``-inf`` with a note), bytes as their ``repr`` (``b'...'``), anything else as
  its ``str()`` text.
* **Notes** go into the record's ``attrs`` (readings) or ``detail`` (events, audit entries)
  under the key :data:`NOTE_KEY` (``canonical``), as one text; a record that needed no
  change gets no note, so existing valid data is stored exactly as before.

Every function is pure and total for the types a record may carry: what it cannot make
canonical (a column value of an unsupported type in a generic record, a structure nested
deeper than Python can walk) raises ``TypeError``/``RecursionError``, and the journal then
stores a ``rejected_record`` event in the record's place.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from daq.model import InstrumentEvent, Quality, Reading, Reason, mark_canonical

#: The earliest and the first refused timestamp (1970-01-01 and 2200-01-01, UTC, in ns).
MIN_TS_NS = 0
MAX_TS_NS = 7_258_118_400 * 1_000_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: The ``attrs``/``detail`` key that carries what canonicalisation changed.
NOTE_KEY = "canonical"
#: ``attrs`` keys holding a timestamp (ns) that the range rule applies to.
ATTR_TIMESTAMPS = frozenset({"device_ns", "source_ns", "server_ns"})


class Notes:
    """What canonicalisation changed in one record, in order, without repeats."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, note: str) -> None:
        if note not in self.items:
            self.items.append(note)

    def __bool__(self) -> bool:
        return bool(self.items)

    def text(self) -> str:
        return "; ".join(self.items)


# -- scalars ------------------------------------------------------------------------------


def _escape_surrogates(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def text(value: Any, notes: Notes | None = None, what: str = "text") -> str:
    """``value`` as valid UTF-8 text (see the module rules); never raises for str/bytes."""
    if isinstance(value, str):
        s = str.__str__(value)  # a str subclass (an enum) is stored as its plain text
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            if notes is not None:
                notes.add(f"{what}: text that was not valid UTF-8 kept escaped")
            return _escape_surrogates(s)
        return s
    if isinstance(value, bytes | bytearray | memoryview):
        b = bytes(value)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            if notes is not None:
                notes.add(f"{what}: bytes that were not valid UTF-8 kept escaped")
            return b.decode("utf-8", "backslashreplace")
    return text(safe_str(value), notes, what)


def optional_text(value: Any, notes: Notes | None = None, what: str = "text") -> str | None:
    return None if value is None else text(value, notes, what)


def safe_str(value: Any) -> str:
    """``str(value)``, or a description of it when that fails (an int of more digits than
    Python converts, an object whose ``__str__`` raises)."""
    try:
        return str(value)
    except Exception:
        if isinstance(value, int):
            return hex(value)
        return f"<{type(value).__name__} that cannot be shown as text>"


def safe_repr(value: Any) -> str:
    """``repr(value)`` as valid UTF-8 text, whatever ``value`` is."""
    try:
        r = repr(value)
    except Exception:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # Field by field, so one field that cannot be shown does not hide the others.
            fields = ", ".join(
                f"{f.name}={safe_repr(getattr(value, f.name, None))}" for f in dataclasses.fields(value)
            )
            r = f"{type(value).__name__}({fields})"
        else:
            r = f"<{type(value).__name__} that cannot be shown as text>"
    return text(r)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than int->str converts
        return hex(value)


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def sane_ts(value: int) -> bool:
    return MIN_TS_NS <= value < MAX_TS_NS


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    return None


def timestamp(value: Any, notes: Notes, what: str) -> int | None:
    """A timestamp field (ns since the epoch) or ``None`` when there is none or it is out of
    range (noted)."""
    if value is None:
        return None
    v = _as_int(value)
    if v is None:
        notes.add(f"{what} {safe_repr(value)} is not an integer: no timestamp")
        return None
    if not sane_ts(v):
        notes.add(f"{what} {_int_text(v)} is outside 1970..2200: no timestamp")
        return None
    return v


def required_timestamp(value: Any, fallback_ns: int, notes: Notes, what: str) -> int:
    """A timestamp the journal cannot leave empty: out of range, it becomes ``fallback_ns``
    (the journal's own time; 0 if that is out of range too), with the value found noted."""
    v = timestamp(value, notes, what)
    if v is not None:
        return v
    fallback = fallback_ns if sane_ts(fallback_ns) else 0
    notes.add(f"{what} replaced by the journal's time {fallback}")
    return fallback


def int64(value: Any, fallback: int, notes: Notes, what: str) -> int:
    """An integer column that must fit 64 bits (``mono_ns``)."""
    v = _as_int(value)
    if v is not None and fits_int64(v):
        return v
    notes.add(f"{what} {safe_repr(value)} does not fit 64 bits: replaced by {fallback}")
    return fallback


def raw_bytes(value: Any, notes: Notes) -> bytes | None:
    """The raw frame: bytes as given; text is stored as its (escaped) UTF-8."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    notes.add(f"raw given as {type(value).__name__}: stored as UTF-8 text")
    return text(value).encode("utf-8")


# -- JSON (attrs, detail) --------------------------------------------------------------------


def _json_key(key: Any, notes: Notes) -> str:
    # The names json.dumps gives non-text keys, so the stored object reads back the same.
    if isinstance(key, str):
        return text(key, notes, "key")
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return _int_text(int(key))
    if isinstance(key, float):
        if math.isnan(key):
            return "NaN"
        if math.isinf(key):
            return "Infinity" if key > 0 else "-Infinity"
        return repr(float(key) + 0.0)
    return text(safe_str(key), notes, "key")


def json_value(value: Any, notes: Notes, path: str = "") -> Any:
    """``value`` made JSON-able and round-trip safe (see the module rules)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        v = int(value)
        if fits_int64(v):
            return v
        notes.add(f"{path or 'value'}: integer outside 64 bits kept as text")
        return _int_text(v)
    if isinstance(value, float):
        f = float(value)
        if math.isfinite(f):
            return f + 0.0  # -0.0 -> 0.0
        notes.add(f"{path or 'value'}: non-finite number {f!r} kept as text")
        return repr(f)
    if isinstance(value, str):
        return text(value, notes, path or "value")
    if isinstance(value, bytes | bytearray | memoryview):
        return repr(bytes(value))  # as the journal always showed bytes in JSON: b'...'
    if isinstance(value, Mapping):
        return json_object(value, notes, path)
    if isinstance(value, list | tuple):
        return [json_value(v, notes, f"{path}[{i}]") for i, v in enumerate(value)]
    return text(safe_str(value), notes, path or "value")


def json_object(
    obj: Mapping[Any, Any], notes: Notes, path: str = "", timestamps: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A mapping as a JSON object with text keys; keys in ``timestamps`` follow the timestamp
    rule. Two keys that name alike (``1`` and ``"1"``) are both kept, the later one renamed."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = _json_key(k, notes)
        if key in out:
            n = 2
            while f"{key} ({n})" in out:
                n += 1
            notes.add(f"{path}{key}: two keys of that name; the later kept as '{key} ({n})'")
            key = f"{key} ({n})"
        where = f"{path}{key}"
        if key in timestamps and v is not None and not isinstance(v, bool) and isinstance(v, int):
            out[key] = timestamp(v, notes, where)
        else:
            out[key] = json_value(v, notes, where + ".")
    return out


def with_notes(obj: dict[str, Any] | None, notes: Notes) -> dict[str, Any] | None:
    """``obj`` with the notes added under :data:`NOTE_KEY` (a free key if that one is taken)."""
    if not notes:
        return obj
    out = dict(obj or {})
    key = NOTE_KEY
    n = 2
    while key in out:
        key = f"{NOTE_KEY} ({n})"
        n += 1
    out[key] = notes.text()
    return out


# -- records ----------------------------------------------------------------------------------


def _ok_text(s: Any) -> bool:
    if type(s) is not str:
        return False
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ok_float(v: Any) -> bool:
    # Finite and not -0.0 (v - v is 0.0 only for finite floats).
    return type(v) is float and v - v == 0.0 and (v != 0.0 or math.copysign(1.0, v) > 0)


def _ok_attrs(attrs: Any) -> bool:
    if attrs is None:
        return True
    if type(attrs) is not dict or not attrs:
        return False
    for k, v in attrs.items():
        if not _ok_text(k):
            return False
        t = type(v)
        if t is str:
            if not _ok_text(v):
                return False
        elif t is int:
            if not (INT64_MIN <= v <= INT64_MAX) or (k in ATTR_TIMESTAMPS and not sane_ts(v)):
                return False
        elif t is float:
            if not _ok_float(v):
                return False
        elif v is not None and t is not bool:
            return False
    return True


def is_canonical_reading(r: Reading) -> bool:
    """True when :func:`reading` would return ``r`` unchanged (the usual case, checked fast:
    every reading not yet marked by :func:`checked` passes here once)."""
    # Inlined for speed: exact types first, ASCII text and the float rule of _ok_float without a
    # call; anything unusual goes to the full per-field rules.
    instrument, channel, unit, value = r.instrument, r.channel, r.unit, r.value
    acq_ns, mono_ns = r.acq_ns, r.mono_ns
    return (
        type(r.quality) is Quality
        and (value is None or (type(value) is float and value - value == 0.0
                               and (value != 0.0 or math.copysign(1.0, value) > 0)))
        and type(instrument) is str and (instrument.isascii() or _ok_text(instrument))
        and type(channel) is str and (channel.isascii() or _ok_text(channel))
        and type(unit) is str and (unit.isascii() or _ok_text(unit))
        and type(acq_ns) is int and MIN_TS_NS <= acq_ns < MAX_TS_NS
        and type(mono_ns) is int and INT64_MIN <= mono_ns <= INT64_MAX
        and (r.reason is None or _ok_text(r.reason))
        and (r.device_ns is None or (type(r.device_ns) is int and MIN_TS_NS <= r.device_ns < MAX_TS_NS))
        and (r.raw is None or type(r.raw) is bytes)
        and (r.run_id is None or _ok_text(r.run_id))
        and (r.attrs is None or _ok_attrs(r.attrs))
    )  # fmt: skip


def checked(r: Reading) -> bool:
    """True when ``r`` is canonical, checked once per reading: the answer is remembered on the
    reading (:func:`daq.model.mark_canonical`), so the journal writer does not repeat the
    pipeline's check."""
    if r.canonical_checked:
        return True
    if is_canonical_reading(r):
        mark_canonical(r)
        return True
    return False


def reading(r: Reading, *, now_ns: int, now_mono_ns: int) -> Reading:
    """The canonical form of ``r``: ``r`` itself when it is already canonical, else a copy
    (``r``'s fields are never changed)."""
    if checked(r):
        return r
    c = _reading(r, now_ns=now_ns, now_mono_ns=now_mono_ns)
    mark_canonical(c)  # the rules' output is canonical (they are idempotent: tested)
    return c


def _reading(r: Reading, *, now_ns: int, now_mono_ns: int) -> Reading:
    notes = Notes()
    try:
        quality = Quality(int(r.quality))
    except (TypeError, ValueError):
        notes.add(f"quality {safe_repr(r.quality)} is not a quality: BAD")
        quality = Quality.BAD
    reason = optional_text(r.reason, notes, "reason")
    value: float | None = None
    if r.value is not None:
        refused: str | None = None
        try:
            f = float(r.value)
        except (TypeError, ValueError, OverflowError):
            refused = f"value {safe_repr(r.value)} is not a finite number"
        else:
            if math.isfinite(f):
                value = f + 0.0
            else:
                refused = f"value {f!r} is not finite"
        if refused is not None:
            notes.add(refused)
            if quality is not Quality.BAD or reason is None:
                reason = Reason.NON_FINITE_VALUE
            quality = Quality.BAD
    attrs = json_object(r.attrs, notes, timestamps=ATTR_TIMESTAMPS) if r.attrs else None
    fields: dict[str, Any] = {
        "instrument": text(r.instrument, notes, "instrument"),
        "channel": text(r.channel, notes, "channel"),
        "value": value,
        "unit": text(r.unit, notes, "unit"),
        "quality": quality,
        "reason": reason,
        "acq_ns": required_timestamp(r.acq_ns, now_ns, notes, "acq_ns"),
        "mono_ns": int64(r.mono_ns, now_mono_ns, notes, "mono_ns"),
        "device_ns": timestamp(r.device_ns, notes, "device_ns"),
        "raw": raw_bytes(r.raw, notes),
        "run_id": optional_text(r.run_id, notes, "run_id"),
    }
    return dataclasses.replace(r, attrs=with_notes(attrs, notes) or None, **fields)


def event(e: InstrumentEvent, *, now_ns: int, now_mono_ns: int) -> InstrumentEvent:
    """The canonical copy of ``e``."""
    notes = Notes()
    detail = json_object(e.detail, notes) if e.detail else None
    fields: dict[str, Any] = {
        "instrument": text(e.instrument, notes, "instrument"),
        "kind": text(e.kind, notes, "kind"),
        "ts_ns": required_timestamp(e.ts_ns, now_ns, notes, "ts_ns"),
        "mono_ns": int64(e.mono_ns, now_mono_ns, notes, "mono_ns"),
        "raw": raw_bytes(e.raw, notes),
    }
    return dataclasses.replace(e, detail=with_notes(detail, notes) or None, **fields)


@dataclasses.dataclass(slots=True)
class AuditEntry:
    """One audit-trail entry as queued by :meth:`daq.journal.Journal.audit`."""

    ts_ns: int
    mono_ns: int
    actor: str
    action: str
    subject: str | None
    detail: Mapping[str, Any] | None
    run_id: str | None


def audit(a: AuditEntry, *, now_ns: int, now_mono_ns: int) -> AuditEntry:
    """The canonical copy of ``a``."""
    notes = Notes()
    detail = json_object(a.detail, notes) if a.detail else None
    ts_ns = required_timestamp(a.ts_ns, now_ns, notes, "ts_ns")
    mono_ns = int64(a.mono_ns, now_mono_ns, notes, "mono_ns")
    actor = text(a.actor, notes, "actor")
    action = text(a.action, notes, "action")
    subject = optional_text(a.subject, notes, "subject")
    run_id = optional_text(a.run_id, notes, "run_id")
    return AuditEntry(ts_ns, mono_ns, actor, action, subject, with_notes(detail, notes) or None, run_id)


def column(value: Any) -> Any:
    """One column of a generic chained record (runs, configs, traces, analyses...).

    Text is made valid UTF-8; ``-0.0`` becomes ``0.0``; a non-finite float and an integer
    outside 64 bits are kept as text that SQLite will not read as a number. ``bytes`` are
    kept. Any other type raises ``TypeError`` (the record is then rejected, not guessed at).
    """
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        v = int(value)
        return v if fits_int64(v) else f"{_int_text(v)} (outside 64 bits)"
    if isinstance(value, float):
        f = float(value)
        return f + 0.0 if math.isfinite(f) else f"{f!r} (not finite)"
    if isinstance(value, str | bytearray | memoryview):
        return text(value) if isinstance(value, str) else bytes(value)
    raise TypeError(f"a journal column cannot hold a {type(value).__name__}")
