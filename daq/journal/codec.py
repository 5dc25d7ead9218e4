"""One reading record, one codec: the journal row, the committed record, its JSON object and
the row a line-protocol formatter reads are all derived here, from one list of columns.

A reading's shape was positional and re-encoded wherever it was needed; anything that reads or
writes a reading's columns by position uses the names and functions of this module instead, so
a column added to the ``readings`` table is added in one place.

* a journal row: :data:`READING_COLUMNS` (the ``readings`` table, the chain payload's input);
* a committed record: :class:`ReadingRecord`, a :class:`~daq.model.Reading` with the journal
  id and the per-instrument sequence number its commit gave it;
* its JSON object (:func:`json_object`): what the live stream, ``/api/readings`` and tail
  clients get; it carries the journal ``id``, which is how a client resumes;
* its columns for people (:data:`READABLE_COLUMNS`, :func:`readable`): what a run's export
  writes after a reading's journal columns;
* the line-protocol input (:data:`LINE_COLUMNS`, :data:`LINE_SELECT`, the ``LINE_*`` indexes):
  the columns the forwarder selects and formats, fetched as plain tuples for speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from daq.journal.schema import CHAINED
from daq.model import Quality, Reading, iso

#: The ``readings`` table's columns in table order (the insert tuple and the chain payload).
READING_COLUMNS: tuple[str, ...] = CHAINED["readings"]

#: The columns a line-protocol formatter reads, in this order (one tuple per reading).
LINE_COLUMNS: tuple[str, ...] = (
    "id", "instrument", "channel", "seq", "acq_ns", "value", "unit", "quality", "reason", "attrs", "run_id",
)  # fmt: skip
LINE_SELECT = f"SELECT {', '.join(LINE_COLUMNS)} FROM readings"
#: A :data:`LINE_COLUMNS` tuple as SQLite gives it: id, instrument, channel, seq, acq_ns, value
#: (``None`` for a gap), unit, quality, reason, attrs (canonical JSON), run_id.
LineRow = tuple[int, str, str, int, int, float | None, str, int, str | None, str | None, str | None]
#: Positions in a :data:`LINE_COLUMNS` tuple (the forwarder's hot path indexes tuples); literal,
#: so that indexing a :data:`LineRow` with them is typed (tests/test_codec.py pins them).
LINE_ID: Final = 0
LINE_INSTRUMENT: Final = 1
LINE_CHANNEL: Final = 2
LINE_ACQ_NS: Final = 4

_QUALITY_NAMES = {int(q): q.name for q in Quality}


@dataclasses.dataclass(slots=True, frozen=True)
class ReadingRecord:
    """A committed reading, the journal id it was committed under and its sequence number
    (per instrument, strictly increasing across restarts and retention)."""

    id: int
    seq: int
    reading: Reading


def attrs_json(attrs: Mapping[str, Any] | None) -> str | None:
    """The ``attrs`` column of canonical attrs: canonical JSON (sorted keys, no spaces)."""
    if not attrs:
        return None
    return json.dumps(attrs, sort_keys=True, separators=(",", ":"), default=str)


def row(rid: int, seq: int, r: Reading) -> tuple[Any, ...]:
    """The journal row (:data:`READING_COLUMNS`) of the canonical reading ``r`` under id ``rid``
    and sequence number ``seq``."""
    return (
        rid, r.instrument, r.channel, seq, r.acq_ns, r.mono_ns, r.device_ns, r.value,
        r.unit, int(r.quality), r.reason, r.raw, attrs_json(r.attrs), r.run_id,
    )  # fmt: skip


def record(values: Sequence[Any] | Mapping[str, Any]) -> ReadingRecord:
    """The record of a journal row, given as a :data:`READING_COLUMNS` tuple or a mapping of
    column names (a mapping may lack ``mono_ns``, ``device_ns`` and ``raw``, and may hold
    ``attrs`` decoded already, as :meth:`~daq.journal.reader.JournalReader.readings` gives)."""
    d: Mapping[str, Any] = (
        values if isinstance(values, Mapping) else dict(zip(READING_COLUMNS, values, strict=True))
    )
    attrs = d["attrs"]
    raw = d.get("raw")
    return ReadingRecord(
        id=int(d["id"]),
        seq=int(d["seq"]),
        reading=Reading(
            instrument=d["instrument"],
            channel=d["channel"],
            value=d["value"],
            unit=d["unit"],
            quality=Quality(d["quality"]),
            acq_ns=d["acq_ns"],
            mono_ns=d.get("mono_ns") or 0,
            reason=d["reason"],
            device_ns=d.get("device_ns"),
            raw=bytes(raw) if raw is not None else None,
            attrs=(json.loads(attrs) if isinstance(attrs, str) else attrs) if attrs else None,
            run_id=d["run_id"],
        ),
    )


#: What a run's export writes after a reading's journal columns, for people: the acquisition
#: time in ISO 8601 (UTC) and the quality's name. Not hashed; verifying an export recomputes
#: them with the rest of the file.
READABLE_COLUMNS: tuple[str, ...] = ("acq_iso", "quality_name")


def quality_name(quality: int) -> str:
    """``GOOD``, ``UNCERTAIN`` or ``BAD`` (an unknown code as its number)."""
    return _QUALITY_NAMES.get(int(quality), str(quality))


def readable(row: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`READABLE_COLUMNS` of a reading given as a journal row (a mapping of columns)."""
    return {"acq_iso": iso(row["acq_ns"]), "quality_name": quality_name(row["quality"])}


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def json_object(rec: ReadingRecord) -> dict[str, Any]:
    """The JSON object of a committed reading (the raw frame is left to the journal)."""
    r = rec.reading
    return {
        "type": "reading",
        "id": rec.id,
        "instrument": r.instrument,
        "channel": r.channel,
        "seq": rec.seq,
        "acq_ns": r.acq_ns,
        "value": _finite(r.value),
        "unit": r.unit,
        "quality": quality_name(r.quality),
        "reason": r.reason,
        "run_id": r.run_id,
        "attrs": dict(r.attrs) if r.attrs else None,
    }


def json_bytes(rec: ReadingRecord) -> bytes:
    """:func:`json_object` encoded compactly."""
    return json.dumps(json_object(rec), separators=(",", ":"), default=str).encode()


def line_fields(rec: ReadingRecord) -> LineRow:
    """The :data:`LINE_COLUMNS` tuple of a record, as the forwarder selects it from the journal."""
    r = rec.reading
    return (
        rec.id, r.instrument, r.channel, rec.seq, r.acq_ns, r.value, r.unit, int(r.quality), r.reason,
        attrs_json(r.attrs), r.run_id,
    )  # fmt: skip
