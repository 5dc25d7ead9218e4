"""``daq report RUN --data-dir DIR --out FILE.pdf [--png]``: the run report for QC and QA.

The ``[report]`` section and ``daemon.timezone`` come from ``--config``, else from the run's
own config snapshot in the journal. The report names who generated it (``--by``, default the
login name)."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from daq.cli.argtypes import add_data_dir
from daq.cli.paths import out_file
from daq.runs.checked import journal_run, open_journal
from daq.runs.export import decoded

NAME = "report"
HELP = (
    "render a run's report, a controlled document (title page and signatures, activity and yield, "
    "process, TLC, alarms, audit)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN", help="the run id (see `daq runs list`)")
    add_data_dir(p)
    p.add_argument(
        "--out", type=Path, required=True, metavar="FILE",
        help="FILE.pdf for one PDF, or FILE.png for PNG pages FILE-p01.png, FILE-p02.png ... "
        "(the directory must exist)",
    )  # fmt: skip
    p.add_argument("--png", action="store_true", help="PNG pages (FILE must end in .png)")
    p.add_argument(
        "--config", type=Path, default=None, help="take [report] and daemon.timezone from this file"
    )
    p.add_argument("--by", default=None, help="who generates the report (default: the login name)")


def main(args: argparse.Namespace) -> int:
    # The format is the name's; checked before any work, so a typo costs one line, not a render.
    suffix = out_file(args.out, (".png",) if args.png else (".pdf", ".png"))
    from daq.configfile.snapshot import site_config
    from daq.runs.report import render

    conn = open_journal(args.data_dir)
    try:
        # Refuses a run whose records no longer match their chain hashes or its seal.
        data, _, _ = journal_run(conn, args.run_id)
        cfg = site_config(conn, args.config, data.run.get("config_sha256"))
    finally:
        conn.close()
    data = decoded(data)
    result = render(
        data, args.out, png=suffix == ".png", settings=cfg.report, timezone=cfg.daemon.timezone or None,
        by=args.by or getpass.getuser(),
    )  # fmt: skip
    for f in result["files"]:
        print(f)
    sections = ", ".join(dict.fromkeys(result["sections"]))
    print(f"sections: {sections}; {len(result['sections'])} pages; {result['status']}")
    return 0
