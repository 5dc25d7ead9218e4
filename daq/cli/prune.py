"""``daq prune --data-dir DIR --export OUTDIR ...``: audited retention pruning (daemon stopped)."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from daq.cli.argtypes import add_data_dir
from daq.configfile.load import load_config
from daq.runs.retention import prune
from daq.runs.settings import RunsSection
from daq.timefmt import human

NAME = "prune"
HELP = (
    "delete journal readings and events older than the retention period whose runs are exported "
    "and verified (the daemon must be stopped; pruning is audited and keeps the journal verifiable)"
)


#: Pruning keeps at least a day after a run ended: a shorter period is a typo, not a policy
#: (``0`` or ``-1`` would prune a run that ended minutes ago).
MIN_RETENTION_DAYS = 1.0
MAX_RETENTION_DAYS = 100 * 365.25


def retention_days(text: str) -> float:
    """``--retention-days``: a finite number of days from :data:`MIN_RETENTION_DAYS` to 100 years."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"expected {MIN_RETENTION_DAYS:g} to {MAX_RETENTION_DAYS:g} days, got {text!r}"
        )
    return days


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument(
        "--export", type=Path, action="append", default=[], metavar="OUTDIR",
        help="a verified export of a run to prune (repeat for several runs)",
    )  # fmt: skip
    p.add_argument("--config", default=None, help="take runs.retention_days from this config")
    p.add_argument(
        "--retention-days", type=retention_days, default=None, metavar="DAYS",
        help=f"override the retention period ({MIN_RETENTION_DAYS:g} day at least)",
    )  # fmt: skip
    p.add_argument("--actor", default=None, help="who prunes (default: the login name)")
    p.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    days = args.retention_days
    if days is None:
        days = (
            load_config(args.config).model.runs.retention_days
            if args.config
            else RunsSection().retention_days
        )
    result = prune(
        args.data_dir,
        exports=args.export,
        retention_days=float(days),
        actor=args.actor or getpass.getuser(),
        dry_run=args.dry_run,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return 0
    verb = "would prune" if args.dry_run else "pruned"
    print(f"retention {days:g} days: cutoff {human(result.cutoff_ns)}")
    for table, n in result.rows.items():
        print(f"  {verb} {n} {table} (ids up to {result.through[table]})")
    if result.runs:
        print(f"  runs exported and verified: {', '.join(result.runs)}")
    if result.blocked_by:
        kept = ", ".join(result.blocked_by)
        print(f"  kept: runs without a verified export or not yet past retention: {kept}")
    return 0
