"""``daq verify --data-dir DIR``: re-check the journal's hash chains and integrity.

``daq verify --export OUTDIR [--data-dir DIR]``: check a (copied) run export against its
manifest and seal (and, given the journal, against the seal recorded there)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from daq.cli.argtypes import DATA_DIR_ENV
from daq.journal.verify import VerifyReport, verify_journal

NAME = "verify"
HELP = "re-check the journal's hash chains and SQLite integrity; exit 1 naming the first bad record"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help=f"the daemon's data directory (default ${DATA_DIR_ENV}, unless --export is given)",
    )  # fmt: skip
    p.add_argument("--export", type=Path, default=None, metavar="OUTDIR", help="a run export to check")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _main_export(args: argparse.Namespace) -> int:
    from daq.runs.export import verify_export

    result = verify_export(args.export, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.ok:
        counts = f"{result.files} files, {result.records} records"
        print(f"{result.path}: OK (run {result.run_id}: {counts}); seal {result.seal}")
        for w in result.warnings:
            print(f"  note: {w}")
    else:
        print(f"{result.path}: FAILED: {result.file}: {result.problem}", file=sys.stderr)
    return 0 if result.ok else 1


def _check_signatures(data_dir: Path, report: VerifyReport) -> None:
    """Beyond the chains: each signature signs its own run's seal and analyses, by a signer
    who could sign, and matches its audit entry (:func:`daq.runs.signature_checks.verify_signatures`)."""
    from daq.journal.journal import JOURNAL_FILE, connect
    from daq.runs.signature_checks import verify_signatures

    conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
    try:
        problems = verify_signatures(conn)
    finally:
        conn.close()
    if problems:
        report.ok = False
        report.problem = "; ".join(str(p) for p in problems)
        report.table = "signatures"
        report.row_id = problems[0].row_id or None


def main(args: argparse.Namespace) -> int:
    if args.export is not None:
        return _main_export(args)
    if args.data_dir is None and os.environ.get(DATA_DIR_ENV):
        args.data_dir = Path(os.environ[DATA_DIR_ENV])
    if args.data_dir is None:
        print("daq verify: give --data-dir DIR (the journal) or --export OUTDIR (an export)", file=sys.stderr)
        return 2
    report = verify_journal(args.data_dir)
    if report.ok:
        _check_signatures(args.data_dir, report)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        counts = ", ".join(f"{n} {t}" for t, n in report.rows.items())
        print(f"{report.path}: OK ({counts}); hash chains intact")
    else:
        print(f"{report.path}: FAILED: {report.problem}", file=sys.stderr)
    return 0 if report.ok else 1
