"""``daq report RUN --data-dir DIR --out FILE.pdf [--png]``: the run report for QC and QA."""

from __future__ import annotations

import argparse
from pathlib import Path

from daq.cli.paths import out_file
from daq.runs.export import decoded, journal_run, open_journal

NAME = "report"
HELP = "render a run's report (header, activity and yield, process values, TLC and RCP, audit) as PDF or PNG"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN", help="the run id (see `daq runs list`)")
    p.add_argument("--data-dir", type=Path, required=True, help="the daemon's data directory")
    p.add_argument(
        "--out", type=Path, required=True, metavar="FILE",
        help="FILE.pdf for one PDF, or FILE.png for PNG pages FILE-p01.png, FILE-p02.png ... "
        "(the directory must exist)",
    )  # fmt: skip
    p.add_argument(
        "--png", action="store_true", help="PNG pages (FILE must end in .png; the same as giving FILE.png)"
    )


def main(args: argparse.Namespace) -> int:
    suffix = out_file(args.out, (".png",) if args.png else (".pdf", ".png"))  # the format is the name's
    from daq.runs.report import render

    conn = open_journal(args.data_dir)
    try:
        # Refuses a run whose records no longer match their chain hashes or its seal.
        data, _, _ = journal_run(conn, args.run_id)
    finally:
        conn.close()
    data = decoded(data)
    result = render(data, args.out, png=suffix == ".png")
    for f in result["files"]:
        print(f)
    print(f"sections: {', '.join(dict.fromkeys(result['sections']))}")
    return 0
