"""``daq run --config FILE``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from daq import logs
from daq.cli.argtypes import seconds
from daq.configfile.load import load_config
from daq.daemon import Daemon

NAME = "run"
HELP = "run the acquisition daemon (SIGTERM or SIGINT flush the journal and exit 0)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the TOML config file")
    p.add_argument("--duration", type=seconds, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--data-dir", type=Path, default=None, help="override daemon.data_dir")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.data_dir is not None:
        cfg = cfg.with_data_dir(args.data_dir)
    logs.configure(cfg.daemon.log_level)
    daemon = Daemon(cfg)
    asyncio.run(daemon.run(duration_s=args.duration, install_signals=True))
    return daemon.exit_code
