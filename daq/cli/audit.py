"""``daq audit --data-dir DIR [--since T] [--run RUN] [--json]``: the audit trail.

Reads the journal directly (read-only, beside a running daemon). Times print as ISO 8601 with
their UTC offset; the journal stores UTC nanoseconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daq.cli.argtypes import add_data_dir
from daq.journal.reader import JournalReader
from daq.model import iso
from daq.runs import store
from daq.runs.seal import selector
from daq.timefmt import human
from daq.timeparse import parse_instant

NAME = "audit"
HELP = "list the audit trail (who did what, when and why), optionally since a time or for one run"


def parse_since(text: str, *, now_ns: int | None = None) -> int:
    """UTC nanoseconds from ISO 8601 (an offset is required, or ``Z``) or a duration ago (``90m``, ``2h``)."""
    return parse_instant(text, "--since", now_ns=now_ns)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--since", default=None, metavar="T", help="ISO 8601 time with offset, or a duration (2h)")
    p.add_argument("--run", default=None, metavar="RUN", help="only the entries of this run")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def entries(
    data_dir: Path, *, since_ns: int | None = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """Audit entries in id order; a run's are those its export holds (see :mod:`daq.runs.seal`)."""
    with JournalReader(data_dir) as reader:
        if run_id is None:
            return reader.audit(since_ns=since_ns)
        where, args = selector("audit", store.get_run(reader.conn, run_id))
        ids = {row[0] for row in reader.conn.execute(f"SELECT t.id FROM audit t WHERE {where}", args)}
        return [a for a in reader.audit(since_ns=since_ns) if a["id"] in ids]


def _short(detail: Any) -> str:
    if not detail:
        return ""
    text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def main(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    rows = entries(args.data_dir, since_ns=since, run_id=args.run)
    for row in rows:
        if args.json:
            print(json.dumps({**row, "ts": iso(row["ts_ns"])}, sort_keys=True, ensure_ascii=False))
            continue
        subject = f" {row['subject']}" if row["subject"] else ""
        run = f" [run {row['run_id']}]" if row["run_id"] else ""
        head = f"{human(row['ts_ns'])}  #{row['id']:<6} {row['actor']:<16} {row['action']}{subject}{run}"
        print(f"{head}  {_short(row['detail'])}")
    if not args.json:
        print(f"{len(rows)} audit entries")
    return 0
