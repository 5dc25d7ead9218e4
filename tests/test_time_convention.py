"""One time convention: what people read is in the site's zone with its offset, what machines
read is UTC. Checked for every human-facing command under a zone that is not UTC."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daq import timefmt
from daq.cli import main as cli
from tests.runs_helpers import record_run

#: +05:30 all year (no daylight saving), so no accident of the date can make it match.
ZONE = "Asia/Kolkata"
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?([+-]\d{2}:\d{2}|Z)")


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
    timefmt.set_site_zone(None)


def _offsets(text: str) -> set[str]:
    # A JSON detail shown verbatim (an audit entry's) is the record's own content: not a time
    # the command formats, so it is left out.
    shown = "\n".join(line.split("  {")[0] for line in text.splitlines())
    return {m.group(1) for m in STAMP.finditer(shown)}


async def test_every_human_facing_command_shows_the_site_zone(
    kolkata: None, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = await record_run(data_dir, readings=5)
    capsys.readouterr()
    d = str(data_dir)
    human = [
        ["audit", "--data-dir", d],
        ["runs", "list", "--data-dir", d],
        ["runs", "show", rec.run_id, "--data-dir", d],
        ["status", "--data-dir", d],
        ["tlc", "list", "--data-dir", d],
        ["runs", "review", rec.run_id, "--data-dir", d],
        ["prune", "--data-dir", d, "--dry-run"],
    ]
    for argv in human:
        code = cli(argv)
        out = capsys.readouterr().out
        assert code in (0, 1), (argv, code)
        offsets = _offsets(out)
        assert offsets, f"{argv}: no time shown: {out[:400]}"
        assert offsets == {"+05:30"}, f"{argv}: {offsets}"
    # Machine output stays UTC.
    for argv in (["audit", "--data-dir", d, "--json"], ["tlc", "list", "--data-dir", d, "--json"]):
        assert cli(argv) == 0
        text = capsys.readouterr().out
        assert _offsets(text) == {"+00:00"}, argv
        assert json.loads(text.splitlines()[0] if argv[0] == "audit" else text)


def test_tail_and_demo_stamps_use_the_site_zone(kolkata: None) -> None:
    from daq.cli.tail import Printer

    class Out:
        def isatty(self) -> bool:
            return False

    line = Printer(Out(), as_json=False).line(  # type: ignore[arg-type]
        {
            "acq_ns": 1_767_225_600_123_000_000,
            "instrument": "dc1",
            "channel": "activity",
            "unit": "Bq",
            "value": 1.0,
            "quality": "GOOD",
            "reason": None,
        }
    )
    assert line.startswith("2026-01-01T05:30:00.123+05:30")
    assert timefmt.clock_time(1_767_225_600_123_000_000) == "05:30:00.123"
    assert timefmt.zone_label(ns=1_767_225_600_000_000_000) == "system zone (UTC+05:30)"


def test_the_journal_names_the_site_zone(kolkata: None) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE configs (id INTEGER PRIMARY KEY, text TEXT)")
    assert timefmt.journal_zone(conn) is None  # nothing recorded: the system's
    conn.execute("INSERT INTO configs (text) VALUES (?)", ('[daemon]\ntimezone = "Europe/Vienna"\n',))
    tz = timefmt.journal_zone(conn)
    assert str(tz) == "Europe/Vienna"
    # 2026-07-01T00:00:00Z: summer time in Vienna.
    assert timefmt.human(1_782_864_000_000_000_000, tz) == "2026-07-01T02:00:00.000+02:00"
    conn.execute("INSERT INTO configs (text) VALUES (?)", ("not = [valid toml",))
    assert timefmt.journal_zone(conn) is None  # unreadable: the system's, never an error
