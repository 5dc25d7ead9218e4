"""The ``daq`` command line. Each command is a module here with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``main(args) -> exit code``; :data:`COMMANDS` lists them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from daq import __version__, timefmt
from daq.cli import (
    alarms,
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
    sinks,
    status,
    tail,
    tlc,
    users,
    validate,
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
    alarms,
    audit,
    export,
    report,
    prune,
    sinks,
    tlc,
    users,
    validate,
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at ``--help`` (not the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


#: Sub-commands people type for ``daq runs ...`` after ``daq run`` (which starts the daemon).
_RUNS_VERBS = {"list", "show", "start", "stop", "annotate", "t0", "review", "sign"}

#: Exit status of an error the code did not expect (``EX_SOFTWARE``): a bug to report, never a
#: silent success. ``DAQ_DEBUG=1`` prints its traceback.
EXIT_INTERNAL = 70


def _error(message: str) -> None:
    # One line, whatever the message holds: a multi-line message would read as several errors.
    print(f"daq: {' '.join(message.split())}", file=sys.stderr)


def _quiet_broken_pipe() -> int:
    """``daq audit | head`` closed our stdout: stop quietly, as Unix tools do.

    Python would otherwise report the failed flush of the closed pipe at exit; pointing stdout
    at /dev/null first makes that flush a no-op.
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a killed writer of a pipe


def _site_zone(args: argparse.Namespace) -> timefmt.Zone:
    """The zone people's times are shown in: ``daemon.timezone`` of ``--config`` when given, else
    of the journal the command reads (its newest recorded config), else the system's. Never
    fails: a problem with either file is the command's own to report."""
    from daq.journal.journal import JOURNAL_FILE, connect

    config = getattr(args, "config", None)
    if config:
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            daemon = tomllib.loads(Path(config).read_text(encoding="utf-8")).get("daemon", {})
            return timefmt.zone(daemon.get("timezone"))
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and (Path(data_dir) / JOURNAL_FILE).is_file():
        with contextlib.suppress(DaqError, sqlite3.Error, OSError):
            conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
            try:
                return timefmt.journal_zone(conn)
            finally:
                conn.close()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "run" and argv[1] in _RUNS_VERBS:
        _error(f"'daq run' starts the daemon; did you mean 'daq runs {argv[1]}'?")
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    timefmt.set_site_zone(_site_zone(args))
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away is noticed here, not at interpreter exit
        return code
    except ConfigError as exc:
        _error(f"config error: {exc}")
        return 2
    except DaqError as exc:
        _error(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"error: {where}{exc.strerror or exc}")
        return 1
    except sqlite3.Error as exc:
        _error(f"error: journal: {exc}")
        return 1
    except Exception as exc:
        if os.environ.get("DAQ_DEBUG"):
            raise
        _error(
            f"internal error: {type(exc).__name__}: {exc} "
            "(a bug: please report it; DAQ_DEBUG=1 shows the traceback)"
        )
        return EXIT_INTERNAL
