"""The ``daq`` command line. Each command is a module here with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``main(args) -> exit code``; :data:`COMMANDS` lists them."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from daq import __version__
from daq.cli import (
    audit,
    check_config,
    decay,
    demo,
    export,
    prune,
    report,
    run,
    runs,
    simulate,
    status,
    tail,
    tlc,
    verify,
)
from daq.errors import ConfigError, DaqError

COMMANDS: list[ModuleType] = [
    run,
    check_config,
    demo,
    simulate,
    status,
    tail,
    verify,
    decay,
    runs,
    audit,
    export,
    report,
    prune,
    tlc,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daq",
        description="hotcell-daq: journal-first data acquisition for radiopharmaceutical hot cells.",
    )
    parser.add_argument("--version", action="version", version=f"hotcell-daq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"daq: config error: {exc}", file=sys.stderr)
        return 2
    except DaqError as exc:
        print(f"daq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
