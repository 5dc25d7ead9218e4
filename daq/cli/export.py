"""``daq export RUN --data-dir DIR --out OUTDIR [--format csv|json]``: a verifiable run export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daq.cli.argtypes import add_data_dir
from daq.cli.paths import out_dir
from daq.runs.export import write_export

NAME = "export"
HELP = "export a run's readings, traces, events and audit entries with a manifest of SHA-256s and the seal"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN", help="the run id (see `daq runs list`)")
    add_data_dir(p)
    p.add_argument("--out", type=Path, required=True, metavar="OUTDIR", help="a new (or empty) directory")
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="tables as CSV or JSON lines")
    p.add_argument("--json", action="store_true", help="print the manifest")


def main(args: argparse.Namespace) -> int:
    manifest = write_export(args.data_dir, args.run_id, out_dir(args.out), args.format)
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
        return 0
    rows = ", ".join(f"{spec['rows']} {t}" for t, spec in manifest["tables"].items())
    state = (
        "sealed" if manifest["sealed"] else "OPEN (not sealed yet; the seal shown covers the records so far)"
    )
    print(f"exported run {args.run_id} to {args.out}: {rows}")
    print(f"seal {manifest['seal']} ({state})")
    print(f"check a copy with: daq verify --export {args.out}")
    return 0
