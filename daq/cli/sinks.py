"""``daq sinks list|rewind|forget --data-dir DIR``: the sinks' cursors in the journal.

``rewind NAME --to TIME`` sends again everything acquired since TIME (a store lost points it
had acknowledged); ``forget NAME`` deletes the cursor of a sink removed from the configuration
(it would otherwise keep retention from pruning). Both need the daemon stopped and are audited
(see :mod:`daq.forward.cursors`)."""

from __future__ import annotations

import argparse
import getpass
import json

from daq.cli.argtypes import add_data_dir
from daq.errors import DaqError
from daq.timefmt import human

NAME = "sinks"
HELP = "list the sinks' cursors; rewind a sink to send again since a time; forget a removed sink (audited)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sinks_command", metavar="ACTION", required=True)
    s = sub.add_parser("list", help="each sink's cursor and pending readings")
    add_data_dir(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("rewind", help="send again every reading acquired since --to (daemon stopped)")
    s.add_argument("name", help="the sink")
    s.add_argument(
        "--to", required=True, metavar="TIME", help="ISO 8601 time with offset, or a duration ago (2h)"
    )
    _change_args(s)
    s = sub.add_parser("forget", help="delete the cursor of a sink no longer configured (daemon stopped)")
    s.add_argument("name", help="the sink")
    s.add_argument("--config", default=None, help="refuse if this configuration still has the sink")
    _change_args(s)


def _change_args(s: argparse.ArgumentParser) -> None:
    add_data_dir(s)
    s.add_argument("--reason", default=None, help="why (kept in the audit entry)")
    s.add_argument("--actor", default=None, help="who does this (default: the login name)")
    s.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    s.add_argument("--json", action="store_true", help="machine-readable output")


def _to_ns(text: str) -> int:
    from daq.cli.audit import parse_since

    try:
        value = parse_since(text)
    except (OverflowError, ValueError):
        raise DaqError(f"--to: {text!r} is out of range") from None
    except DaqError as exc:
        raise DaqError(str(exc).replace("--since", "--to", 1)) from None
    if not 0 <= value < 2**63:
        raise DaqError(f"--to: {text!r} is out of range")
    return value


def main(args: argparse.Namespace) -> int:
    from daq.forward import cursors

    if args.sinks_command == "list":
        from daq.cli.status import collect

        sinks = collect(args.data_dir)["sinks"]
        if args.json:
            print(json.dumps(sinks, indent=2, sort_keys=True))
        for name, s in sorted(sinks.items()):
            if not args.json:
                print(f"{name}: forwarded through id {s['forwarded_through_id']}, pending {s['pending']}")
        return 0
    actor = args.actor or getpass.getuser()
    if args.sinks_command == "rewind":
        to_ns = _to_ns(args.to)
        change = cursors.rewind(
            args.data_dir, args.name, to_ns=to_ns, actor=actor, reason=args.reason, dry_run=args.dry_run
        )
    else:
        configured: set[str] | None = None
        if args.config:
            from daq.configfile.load import load_config

            configured = {s.name for s in getattr(load_config(args.config).model, "sinks", [])}
        change = cursors.forget(
            args.data_dir,
            args.name,
            actor=actor,
            reason=args.reason,
            configured=configured,
            dry_run=args.dry_run,
        )
    if args.json:
        print(json.dumps(change.as_dict(), indent=2, sort_keys=True))
        return 0
    if change.action == "rewind":
        if change.to_id == change.from_id:
            print(f"sink {change.sink}: {change.note}")
        else:
            print(
                f"sink {change.sink}: rewound from id {change.from_id} to {change.to_id} "
                f"({change.readings} readings since {human(to_ns)} to send again)"
                + (" [dry run: nothing changed]" if args.dry_run else "")
            )
    else:
        print(
            f"sink {change.sink}: cursor at id {change.from_id} forgotten ({change.readings} readings "
            f"it had not acknowledged no longer held back from retention)"
            + (" [dry run: nothing changed]" if args.dry_run else "")
        )
    if change.note and change.to_id != change.from_id:
        print(f"  note: {change.note}")
    return 0
