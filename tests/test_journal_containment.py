"""The journal writer never stops on one record: canonical text, numbers and timestamps,
refused records kept as ``rejected_record`` events, isolated commit hooks and subscribers.

Each case here once ended the writer task on main (no commit ever again, ``flush`` and
shutdown waiting forever) or made ``daq verify`` report a legitimate row as altered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daq.clock import ManualClock
from daq.errors import JournalError
from daq.journal import Journal, JournalReader, batch, verify_journal
from daq.journal.feed import FeedBatch, RecordBatch
from daq.model import InstrumentEvent, Quality, Reading

NOW = 1_700_000_000_000_000_000
#: OPC UA's null DateTime (1601-01-01) in ns since 1970.
OPCUA_NULL_NS = -11_644_473_600_000_000_000


def reading(i: int = 0, **fields: Any) -> Reading:
    base: dict[str, Any] = {
        "instrument": "dc1", "channel": "activity", "value": 1000.0 + i, "unit": "Bq",
        "quality": Quality.GOOD, "acq_ns": NOW + i, "mono_ns": i, "raw": b"F-18: 1 MBq\r\n",
    }  # fmt: skip
    base.update(fields)
    return Reading(**base)


async def flushed(journal: Journal) -> None:
    # Bounded, so a dead writer fails the test instead of hanging it.
    async with asyncio.timeout(5):
        await journal.flush()


async def open_journal(data_dir: Path) -> Journal:
    return await Journal.open(data_dir, clock=ManualClock(wall_ns=NOW, mono_ns=7))


async def test_text_that_is_not_utf8_is_kept_escaped_and_the_writer_goes_on(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        # What Python makes of argv bytes b"vial K\xe4lte" and of JSON "\ud800".
        journal.audit("annotation", actor="op\ud800", detail={"text": "vial K\udce4lte"}, subject="s\udce4")
        journal.record(
            "run_events",
            {"run_id": "R\udce4", "kind": "annotation", "ts_ns": NOW, "mono_ns": 1, "actor": "K\udce4lte",
             "reason": "r\ud800", "instrument": None, "detail": None},
        )  # fmt: skip
        journal.append(reading(channel="act\udce4", unit="B\ud800q", attrs={"k\udce4y": "v\ud800"}))
        journal.event(InstrumentEvent("dc1", "parse_error", NOW, 1, {"text": "x\udcff"}, b"\xff"))
        await flushed(journal)
        journal.append(reading(1))
        await flushed(journal)
    finally:
        await journal.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        audit = r.audit()[-1]
        run_event = r.table("run_events")[-1]
        rows = r.readings()
        event = r.events()[-1]
    assert audit["actor"] == "op\\ud800"
    assert audit["subject"] == "s\\xe4"
    assert audit["detail"]["text"] == "vial K\\xe4lte"
    assert "not valid UTF-8" in audit["detail"]["canonical"]
    assert run_event["actor"] == "K\\xe4lte"
    assert run_event["reason"] == "r\\ud800"
    assert rows[0]["channel"] == "act\\xe4"
    assert rows[0]["unit"] == "B\\ud800q"
    assert rows[0]["attrs"]["k\\xe4y"] == "v\\ud800"
    assert [row["seq"] for row in rows] == [1, 2]
    assert event["detail"]["text"] == "x\\xff"
    assert event["raw"] == b"\xff"


async def test_negative_zero_is_stored_as_zero_and_verifies(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        journal.append(reading(value=-0.0, attrs={"reported": -0.0}))
        await flushed(journal)
    finally:
        await journal.close()
    report = verify_journal(data_dir)
    assert report.ok, report.problem
    with JournalReader(data_dir) as r:
        row = r.readings()[0]
    assert row["value"] == 0.0
    assert str(row["value"]) == "0.0"
    assert row["attrs"] == {"reported": 0.0}


async def test_null_and_absurd_timestamps_become_no_timestamp_with_a_note(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        journal.append(
            reading(device_ns=OPCUA_NULL_NS, attrs={"source_ns": OPCUA_NULL_NS, "server_ns": OPCUA_NULL_NS})
        )
        journal.append(reading(1, device_ns=2**70, acq_ns=-5, attrs={"server_ns": NOW, "big": 2**64}))
        journal.event(InstrumentEvent("dc1", "connected", OPCUA_NULL_NS, 2**64))
        await flushed(journal)
        journal.append(reading(2))
        await flushed(journal)
    finally:
        await journal.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        rows = r.readings()
        event = r.events()[-1]
    first, second, third = rows
    assert first["device_ns"] is None
    assert first["attrs"]["source_ns"] is None
    assert first["attrs"]["server_ns"] is None
    assert (
        "device_ns -11644473600000000000 is outside 1970..2200: no timestamp" in first["attrs"]["canonical"]
    )
    assert second["device_ns"] is None
    assert second["acq_ns"] == NOW  # the journal's own time, noted
    assert "acq_ns -5 is outside 1970..2200" in second["attrs"]["canonical"]
    assert second["attrs"]["server_ns"] == NOW
    assert second["attrs"]["big"] == str(2**64)
    assert third["attrs"] is None
    assert event["ts_ns"] == NOW
    assert event["mono_ns"] == 7  # ManualClock's monotonic time, noted
    assert "ts_ns -11644473600000000000" in event["detail"]["canonical"]


async def test_non_finite_values_become_bad_with_the_raw_frame_kept(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        journal.append(reading(value=float("nan"), raw=b"F-18: nan MBq\r\n"))
        journal.append(reading(1, value=float("-inf"), quality=Quality.BAD, reason="device_error"))
        journal.append(reading(2, value=10**400))
        await flushed(journal)
    finally:
        await journal.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        nan, inf, huge = r.readings()
    assert (nan["value"], nan["quality"], nan["reason"]) == (None, Quality.BAD, "non_finite_value")
    assert nan["raw"] == b"F-18: nan MBq\r\n"
    assert "value nan is not finite" in nan["attrs"]["canonical"]
    assert (inf["value"], inf["reason"]) == (None, "device_error")
    assert (huge["value"], huge["reason"]) == (None, "non_finite_value")


async def test_a_record_that_cannot_be_stored_is_journaled_as_rejected_record(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        journal.append(reading(0))
        # A column SQLite cannot hold (a dict) and a NOT NULL column left empty.
        journal.record("configs", {"ts_ns": NOW, "sha256": "a", "path": None, "text": {"not": "text"}})
        journal.record("configs", {"ts_ns": NOW, "sha256": "b", "path": None, "text": None})
        journal.record("configs", {"ts_ns": NOW, "sha256": "c", "path": "ok.toml", "text": "x = 1"})
        nested: Any = []
        for _ in range(100_000):
            nested = [nested]
        journal.append(reading(1, attrs={"deep": nested}, raw=b"deep\r\n"))
        journal.append(reading(2))
        await flushed(journal)
        assert journal.rejected == 3
        assert journal.health()["rejected"] == 3
        # The writer is still writing.
        journal.record("configs", {"ts_ns": NOW, "sha256": "d", "path": "ok.toml", "text": "x = 2"})
        journal.append(reading(3))
        await flushed(journal)
    finally:
        await journal.close()
    report = verify_journal(data_dir)
    assert report.ok, report.problem
    with JournalReader(data_dir) as r:
        configs = r.table("configs")
        rows = r.readings()
        rejected = [e for e in r.events() if e["kind"] == "rejected_record"]
    assert [c["sha256"] for c in configs] == ["c", "d"]
    assert [c["id"] for c in configs] == [1, 2]
    assert [row["seq"] for row in rows] == [1, 3, 4]  # seq 2 is the refused reading
    by_table = {(e["detail"]["table"], e["detail"]["error_type"]) for e in rejected}
    assert by_table == {
        ("configs", "TypeError"),
        ("configs", "IntegrityError"),
        ("readings", "RecursionError"),
    }
    refused_reading = next(e for e in rejected if e["detail"]["table"] == "readings")
    assert refused_reading["instrument"] == "dc1"
    assert refused_reading["raw"] == b"deep\r\n"
    assert refused_reading["detail"]["seq"] == 2
    assert "Reading(instrument='dc1'" in refused_reading["detail"]["record"]
    json.dumps([e["detail"] for e in rejected])  # always encodable


async def test_a_record_feed_publishes_the_rows_as_stored_around_a_refused_one(data_dir: Path) -> None:
    """After a refusal the batch is stored row by row and the rows after the refused one are
    renumbered: the live feed of the table carries them with the ids they were stored under."""
    journal = await open_journal(data_dir)
    sub = journal.record_feed("configs").subscribe(100, "test")
    try:
        journal.record("configs", {"ts_ns": NOW, "sha256": "a", "path": "a.toml", "text": "x = 1"})
        journal.record("configs", {"ts_ns": NOW, "sha256": "b", "path": None, "text": None})  # NOT NULL
        journal.record("configs", {"ts_ns": NOW, "sha256": "c", "path": "c.toml", "text": "x = 3"})
        await flushed(journal)
        published = [row for item in sub.take() if isinstance(item, RecordBatch) for row in item.rows]
    finally:
        sub.close()
        await journal.close()
    with JournalReader(data_dir) as r:
        stored = [(c["id"], c["sha256"]) for c in r.table("configs")]
    assert stored == [(1, "a"), (2, "c")]
    assert [(row[0], row[2]) for row in published] == stored


async def test_a_row_refused_inside_a_many_row_statement_refuses_only_itself(data_dir: Path) -> None:
    """Rows go into SQLite many to a statement: a refused row inside one (here the 61st of
    123, in the second statement; the last 23 are the remainder) rolls the batch back to the
    row-by-row path, which refuses that row only and stores the rest in order."""
    n = 2 * batch.ROWS_PER_STATEMENT + 23
    bad = batch.ROWS_PER_STATEMENT + 10
    journal = await open_journal(data_dir)
    try:
        for i in range(n):
            text = None if i == bad else f"x = {i}"
            journal.record("configs", {"ts_ns": NOW, "sha256": str(i), "path": "c.toml", "text": text})
            journal.append(reading(i))
        await flushed(journal)
        assert journal.rejected == 1
    finally:
        await journal.close()
    report = verify_journal(data_dir)
    assert report.ok, report.problem
    with JournalReader(data_dir) as r:
        configs = r.table("configs")
        rows = r.readings()
    assert [c["sha256"] for c in configs] == [str(i) for i in range(n) if i != bad]
    assert [c["id"] for c in configs] == list(range(1, n))
    assert [row["seq"] for row in rows] == list(range(1, n + 1))


async def test_a_raising_commit_hook_or_subscriber_does_not_stop_the_writer(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    seen: list[int] = []

    def broken(readings: list[Reading]) -> None:
        raise RuntimeError("hook bug")

    def broken_offer(batch: FeedBatch) -> None:
        raise ValueError("subscriber bug")

    journal.on_commit(broken)
    sub = journal.feed.subscribe(100, "broken")
    sub.offer = broken_offer  # type: ignore[method-assign]
    journal.on_commit(lambda rs: seen.extend(r.mono_ns for r in rs))
    try:
        with capture_logs() as logs:
            for i in range(3):
                journal.append(reading(i))
                await flushed(journal)
    finally:
        await journal.close()
    assert seen == [0, 1, 2]
    assert journal.hook_errors == 6
    assert journal.health()["hook_errors"] == 6
    failures = [e for e in logs if "journal consumer failed" in e["event"]]
    assert len(failures) == 2  # once per cause, not once per commit
    assert verify_journal(data_dir).ok


async def test_flush_and_close_are_bounded(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    journal.append(reading(0))
    await flushed(journal)
    await journal.close(timeout_s=1.0)
    journal.append(reading(1))
    with pytest.raises(Exception, match="closed"):
        await journal.flush(timeout_s=1.0)


async def test_an_unexpected_writer_error_is_logged_once_counted_and_retried(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await open_journal(data_dir)
    real_commit = batch.commit
    failures = iter([RuntimeError("a bug in the writer"), RuntimeError("a bug in the writer")])

    def flaky(*args: Any) -> Any:
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return real_commit(*args)

    monkeypatch.setattr(batch, "commit", flaky)
    try:
        with capture_logs() as logs:
            journal.append(reading(0))
            await flushed(journal)
    finally:
        await journal.close()
    assert journal.writer_errors == 2
    assert journal.error is None  # committing again
    assert [e["event"] for e in logs].count("journal writer error; retrying") == 1
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        assert [row["seq"] for row in r.readings()] == [1]
        failed = [a for a in r.audit() if a["action"] == "journal_write_failed"]
    assert failed[0]["detail"]["attempts"] == 2
    assert "a bug in the writer" in failed[0]["detail"]["error"]


async def test_a_lost_database_connection_ends_the_writer_loudly(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    told: list[BaseException] = []
    journal.on_fatal(told.append)
    journal.append(reading(0))
    await flushed(journal)
    assert journal._conn is not None
    journal._conn.close()  # what no record can cause: the writer cannot go on
    with capture_logs() as logs:
        journal.append(reading(1))
        with pytest.raises(JournalError, match="the journal writer has stopped"):
            await flushed(journal)
    assert len(told) == 1
    assert journal.fatal is told[0]
    assert not journal.writer_running
    assert journal.health()["writer"] == "failed"
    assert any(e["log_level"] == "critical" for e in logs)
    with pytest.raises(JournalError):
        await journal.flush()
    await journal.close()


async def test_an_audit_detail_is_taken_as_it_was_when_audited(data_dir: Path) -> None:
    journal = await open_journal(data_dir)
    try:
        detail: dict[str, Any] = {"step": 1, "items": ["a"]}
        journal.audit("first", detail=detail)
        detail["step"] = 2  # the caller reuses its dict before the commit
        detail["items"].append("b")
        journal.audit("second", detail=detail)
        await flushed(journal)
    finally:
        await journal.close()
    with JournalReader(data_dir) as r:
        first, second = (a["detail"] for a in r.audit() if a["action"] in ("first", "second"))
    assert first == {"step": 1, "items": ["a"]}
    assert second == {"step": 2, "items": ["a", "b"]}
