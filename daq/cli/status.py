"""``daq status [--json]``: the running daemon, asked through its API (``--api URL``): instruments
(state, last value age, reconnects), sinks (backlog, last error), alarms.

``daq status --data-dir DIR [--json]``: what the journal holds, per instrument and sink."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from daq.journal.reader import JournalReader
from daq.timefmt import human

#: ``daq status`` (asking the daemon) exits with this while any alarm of a configured limit is
#: active and unacknowledged (docs/alarms.md), so a script or a check can act on it.
EXIT_UNACKNOWLEDGED_ALARM = 3

NAME = "status"
HELP = "the running daemon's instruments and sinks (or, with --data-dir, what the journal holds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="read this journal, not the daemon")
    p.add_argument("--api", default=None, metavar="URL", help="the daemon's API (default $DAQ_API or :8470)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def unacknowledged_alarms(live: dict[str, Any]) -> int:
    """Alarms in the daemon's status that are active and not yet acknowledged."""
    from daq.alarms.points import UNACK

    return sum(1 for a in live.get("alarms") or [] if a.get("state") == UNACK)


def collect(data_dir: Path) -> dict[str, Any]:
    with JournalReader(data_dir) as reader:
        instruments = reader.instrument_summary()
        max_id = reader.max_reading_id()
        from daq.forward.status import sink_status_from_journal

        now = time.time_ns()
        sinks = {
            name: {
                **sink_status_from_journal(reader.conn, data_dir, name, cur["last_id"], max_id, now),
                "updated_ns": cur["updated_ns"],
            }
            for name, cur in reader.sink_cursors().items()
        }
        return {
            "journal": str(reader.path),
            "readings": max_id,
            "instruments": instruments,
            "sinks": sinks,
        }


def main(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        from daq.api.client import default_api, format_status, get_json

        live = get_json(args.api or default_api(), "/api/status")
        print(json.dumps(live, indent=2, sort_keys=True) if args.json else format_status(live))
        return EXIT_UNACKNOWLEDGED_ALARM if unacknowledged_alarms(live) else 0
    data = collect(args.data_dir)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"journal {data['journal']}: {data['readings']} readings")
    print(f"{'instrument':<16} {'rows':>9} {'GOOD':>9} {'UNCERT':>7} {'BAD':>7}  last reading")
    for name, s in sorted(data["instruments"].items()):
        q = s["quality"]
        last = human(s["last_acq_ns"]) if s["last_acq_ns"] else "-"
        print(f"{name:<16} {s['rows']:>9} {q['GOOD']:>9} {q['UNCERTAIN']:>7} {q['BAD']:>7}  {last}")
    for name, s in sorted(data["sinks"].items()):
        age = "-" if s["oldest_pending_age_s"] is None else f"{s['oldest_pending_age_s']:.1f} s"
        rate = "-" if s["points_per_s"] is None else f"{s['points_per_s']:g}/s"
        quarantined = "-" if s.get("quarantined") is None else str(s["quarantined"])
        alarm = f", ALARM: {s['alarm']}" if s.get("alarm") else ""
        print(
            f"sink {name}: forwarded through id {s['forwarded_through_id']}, pending {s['pending']} "
            f"(oldest {age}), {rate}, {quarantined} quarantined, last error: {s['last_error'] or '-'}"
            f"{alarm}"
        )
    return 0
