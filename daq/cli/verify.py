"""``daq verify --data-dir DIR``: re-check the journal's hash chains and integrity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from daq.journal.verify import verify_journal

NAME = "verify"
HELP = "re-check the journal's hash chains and SQLite integrity; exit 1 naming the first bad record"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, required=True, help="the daemon's data directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    report = verify_journal(args.data_dir)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        counts = ", ".join(f"{n} {t}" for t, n in report.rows.items())
        print(f"{report.path}: OK ({counts}); hash chains intact")
    else:
        print(f"{report.path}: FAILED: {report.problem}", file=sys.stderr)
    return 0 if report.ok else 1
