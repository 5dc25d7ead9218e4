"""The reading codec: one record, encoded to a journal row, JSON and line-protocol fields."""

from __future__ import annotations

import json
import typing
from pathlib import Path

from daq.clock import ManualClock
from daq.forward.lineprotocol import ROW_COLUMNS, ROW_SELECT
from daq.journal import Journal, JournalReader, codec
from daq.model import Quality, Reading


def test_row_record_json_line_fields_round_trip() -> None:
    r = Reading(
        instrument="dc1", channel="activity", value=1.5e9, unit="Bq", quality=Quality.UNCERTAIN,
        acq_ns=1_700_000_000_000_000_000, mono_ns=42, reason="stale", device_ns=1_700_000_000_000_000_001,
        raw=b"A 1.5E9\\r", attrs={"nuclide": "F-18", "factor": 1.25}, run_id="R-1",
    )  # fmt: skip
    row = codec.row(12, 7, r)
    assert len(row) == len(codec.READING_COLUMNS)
    rec = codec.record(row)
    assert (rec.id, rec.seq) == (12, 7)
    assert rec.reading == r
    # As a mapping (what readers give) too.
    assert codec.record(dict(zip(codec.READING_COLUMNS, row, strict=True))) == rec
    obj = json.loads(codec.json_bytes(rec))
    assert obj == {
        "type": "reading", "id": 12, "instrument": "dc1", "channel": "activity", "seq": 7,
        "acq_ns": 1_700_000_000_000_000_000, "value": 1.5e9, "unit": "Bq", "quality": "UNCERTAIN",
        "reason": "stale", "run_id": "R-1", "attrs": {"factor": 1.25, "nuclide": "F-18"},
    }  # fmt: skip
    fields = codec.line_fields(rec)
    # The line-protocol tuple is the journal row's columns by name, in LINE_COLUMNS order.
    by_name = dict(zip(codec.READING_COLUMNS, row, strict=True))
    assert fields == tuple(by_name[c] for c in codec.LINE_COLUMNS)
    for name in ("id", "instrument", "channel", "acq_ns"):
        assert codec.LINE_COLUMNS[getattr(codec, f"LINE_{name.upper()}")] == name
    assert len(typing.get_args(codec.LineRow)) == len(codec.LINE_COLUMNS)
    assert fields[codec.LINE_ID] == 12
    assert fields[codec.LINE_ACQ_NS] == r.acq_ns
    assert (fields[codec.LINE_INSTRUMENT], fields[codec.LINE_CHANNEL]) == ("dc1", "activity")
    assert (ROW_COLUMNS, ROW_SELECT) == (codec.LINE_COLUMNS, codec.LINE_SELECT)


async def test_a_journaled_row_decodes_to_the_committed_reading_and_its_id(tmp_path: Path) -> None:
    clock = ManualClock()
    journal = await Journal.open(tmp_path, clock=clock)
    committed: list[tuple[int, list[Reading]]] = []
    journal.on_commit(lambda rs: committed.append((journal.last_batch_first_id, rs)))
    for i in range(3):
        journal.append(
            Reading("dc1", "activity", float(i), "Bq", Quality.GOOD, clock.time_ns() + i, i, attrs={"k": i})
        )
    await journal.flush()
    await journal.close()
    with JournalReader(tmp_path) as reader:
        rows = list(reader.readings())
        selected = reader.conn.execute(f"{codec.LINE_SELECT} ORDER BY id").fetchall()
    assert [codec.record(x).id for x in rows] == [1, 2, 3]
    [(first_id, readings)] = committed
    assert first_id == 1
    for i, r in enumerate(readings):
        rec = codec.record(rows[i])
        assert rec.id == first_id + i
        assert rec.reading == r
        # Line fields from the committed record equal what the forwarder selects from the journal.
        assert codec.line_fields(rec) == selected[i]
