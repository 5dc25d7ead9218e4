"""``daq check-config FILE [FILE ...]``."""

from __future__ import annotations

import argparse

from daq.configfile.load import load_config
from daq.forward.naming import check_fleet

NAME = "check-config"
HELP = (
    "validate config files: exit 0 when valid, else print where and why and exit 2; several "
    "files are checked as one fleet (no two may name the same site and cell)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="+", help="the TOML config file (several: the daemons of one fleet)")


def main(args: argparse.Namespace) -> int:
    configs = [load_config(f) for f in args.file]
    check_fleet(configs)
    for file, cfg in zip(args.file, configs, strict=True):
        names = ", ".join(f"{i.name} ({i.kind})" for i in cfg.instruments) or "none"
        print(f"{file}: OK (sha256 {cfg.sha256[:16]}…); instruments: {names}")
    return 0
