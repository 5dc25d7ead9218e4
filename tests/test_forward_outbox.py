"""The outbox reader on a real journal: batches after the cursor, and the cursor's store."""

from __future__ import annotations

from pathlib import Path

from daq.clock import ManualClock
from daq.forward.lineprotocol import LineFormatter
from daq.forward.outbox import OutboxReader
from daq.journal import Journal
from daq.model import Quality, Reading


async def test_batches_follow_the_cursor_and_the_cursor_is_stored_without_waiting(tmp_path: Path) -> None:
    clock = ManualClock()
    journal = await Journal.open(tmp_path, clock=clock)
    t = clock.time_ns()
    for i in range(25):
        journal.append(Reading("dc1", "a", float(i), "Bq", Quality.GOOD, t + i * 1_000_000, 0))
    journal.append(Reading("dc1", "bad\nname", 1.0, "Bq", Quality.GOOD, t, 0))
    await journal.flush()
    fmt = LineFormatter(site="s", cell="c", kinds={"dc1": "calibrator"})
    outbox = OutboxReader(
        journal, "central", fmt, batch_size=10, encode=lambda lines: "\n".join(lines).encode()
    )
    await outbox.open()
    try:
        assert (outbox.cursor, outbox.pending) == (0, 26)
        assert await journal.get_cursor("central") == 0  # registered before the first write
        seen: list[int] = []
        lines: dict[int, list[str]] = {}
        batch = await outbox.fetch(outbox.cursor)
        while batch is not None:
            assert batch.body == "\n".join(batch.lines).encode()
            assert len(batch.lines) == len(batch.ids)
            seen += batch.ids + [rid for rid, _ in batch.unformattable]
            lines[batch.first_id] = batch.lines
            # Acknowledged: the cursor moves at once, its store does not hold up the next batch.
            await outbox.advance(batch.last_id)
            assert outbox.cursor == batch.last_id
            batch = await outbox.fetch(outbox.cursor)
        assert sorted(seen) == list(range(1, 27))
        assert outbox.pending == 0
        await outbox.flush_cursor()
        assert await journal.get_cursor("central") == 26
        # Read again from an earlier cursor: the same lines.
        outbox.cursor = 10
        await outbox.reseed()
        again = await outbox.fetch(10)
        assert again is not None
        assert again.lines == lines[11]
    finally:
        await outbox.close()
        await journal.close()
