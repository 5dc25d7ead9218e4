"""``daq check-config FILE``."""

from __future__ import annotations

import argparse

from daq.config.load import load_config

NAME = "check-config"
HELP = "validate a config file: exit 0 when valid, else print where and why and exit 2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the TOML config file")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    names = ", ".join(f"{i.name} ({i.kind})" for i in cfg.instruments) or "none"
    print(f"{args.file}: OK (sha256 {cfg.sha256[:16]}…); instruments: {names}")
    return 0
