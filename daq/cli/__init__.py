"""The ``daq`` command line. Each command is a module here with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``main(args) -> exit code``; :data:`COMMAND_MODULES` lists them."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sqlite3
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from daq import __version__, timefmt
from daq.errors import ConfigError, DaqError

#: Every command's name and module, in the order ``daq --help`` lists them. A module is imported
#: only when its command runs (or the whole help is shown): ``daq simulate`` or ``daq status``
#: starts without loading the daemon, the journal and every other command.
COMMAND_MODULES: dict[str, str] = {
    "run": "daq.cli.run",
    "check-config": "daq.cli.check_config",
    "demo": "daq.cli.demo",
    "simulate": "daq.cli.simulate",
    "status": "daq.cli.status",
    "tail": "daq.cli.tail",
    "verify": "daq.cli.verify",
    "decay": "daq.cli.decay",
    "runs": "daq.cli.runs",
    "alarms": "daq.cli.alarms",
    "audit": "daq.cli.audit",
    "export": "daq.cli.export",
    "report": "daq.cli.report",
    "prune": "daq.cli.prune",
    "sinks": "daq.cli.sinks",
    "tlc": "daq.cli.tlc",
    "users": "daq.cli.users",
    "validate": "daq.cli.validate",
}


def commands() -> list[ModuleType]:
    """Every command's module (importing them all)."""
    return [importlib.import_module(m) for m in COMMAND_MODULES.values()]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at ``--help`` (not the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` only that command's part of it (the same
    arguments, help and errors for it, without importing the others)."""
    parser = _Parser(
        prog="daq",
        description="hotcell-daq: journal-first data acquisition for radiopharmaceutical hot cells.",
    )
    parser.add_argument("--version", action="version", version=f"hotcell-daq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    names = [command] if command in COMMAND_MODULES else list(COMMAND_MODULES)
    for module in (importlib.import_module(COMMAND_MODULES[n]) for n in names):
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
    config = getattr(args, "config", None)
    if config:
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            daemon = tomllib.loads(Path(config).read_text(encoding="utf-8")).get("daemon", {})
            return timefmt.zone(daemon.get("timezone"))
    data_dir = getattr(args, "data_dir", None)
    if data_dir is None:
        return None
    from daq.journal.journal import JOURNAL_FILE, connect  # only for a command given a journal

    if (Path(data_dir) / JOURNAL_FILE).is_file():
        with contextlib.suppress(DaqError, sqlite3.Error, OSError):
            conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
            try:
                return timefmt.journal_zone(conn)
            finally:
                conn.close()
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's); returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C ends a command with 130 and no traceback, whether it was running or its
        # modules were still loading (about half a second for some, while the parser is built).
        return 130


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "run" and argv[1] in _RUNS_VERBS:
        _error(f"'daq run' starts the daemon; did you mean 'daq runs {argv[1]}'?")
        return 2
    parser = build_parser(argv[0] if argv else None)
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
