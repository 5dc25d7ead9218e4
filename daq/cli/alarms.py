"""``daq alarms list|ack``: alarms of configured limits (docs/alarms.md).

``list`` asks the running daemon (``--api``, else ``$DAQ_API``, else ``http://127.0.0.1:8470``)
for its active and recent alarms, or, with ``--data-dir`` (default ``$DAQ_DATA_DIR``), reads
the alarm journal, so it works with the daemon stopped (``--api`` given asks the daemon).
``ack`` acknowledges one alarm through the API with the bearer token, as ``daq runs start``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from daq.api.client import DEFAULT_API, default_api, get_json
from daq.cli.argtypes import DATA_DIR_ENV
from daq.cli.following import follow_stream
from daq.clock import Clock
from daq.timefmt import human

NAME = "alarms"
HELP = "list alarms of configured limits (live or from the journal) and acknowledge them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="alarms_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "list", help="active and recent alarms (the daemon's, or the journal's with --data-dir)"
    )
    env = os.environ.get(DATA_DIR_ENV)
    s.add_argument(
        "--data-dir", type=Path, default=Path(env) if env else None, metavar="DIR",
        help=f"read the alarm journal in this data directory, not the daemon (default ${DATA_DIR_ENV})",
    )  # fmt: skip
    s.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help=f"the daemon's local API (default $DAQ_API or {DEFAULT_API})",
    )
    s.add_argument(
        "--all",
        action="store_true",
        help=f"with --data-dir: every finished alarm, not only the last {RECENT}",
    )
    s.add_argument("--json", action="store_true", help="machine-readable output (times in UTC ns)")
    s = sub.add_parser("ack", help="acknowledge an alarm in the running daemon (audited)")
    s.add_argument("alarm_id", metavar="ID", help="the alarm's id (see daq alarms list)")
    s.add_argument("--comment", required=True, help="why, or what was done (audited)")
    s.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help=f"the daemon's local API (default $DAQ_API or {DEFAULT_API})",
    )
    s.add_argument("--token-env", default="DAQ_API_TOKEN", metavar="NAME", help="variable holding the token")
    s.add_argument("--token-file", type=Path, default=None, help="file holding the token (a credential)")
    s.add_argument("--actor", default=None, help="who acknowledges (default: the login name)")
    s.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")


#: Finished alarms ``list --data-dir`` shows without ``--all``.
RECENT = 20


def _when(ns: int | None) -> str:
    return human(ns) if ns else "-"


def format_alarms(active: list[dict[str, Any]], recent: list[dict[str, Any]]) -> str:
    lines = [f"{'id':<12}  {'severity':<8}  {'state':<34}  {'raised':<29}  subject / message"]
    for a in [*active, *recent]:
        lines.append(
            f"{a['id']:<12}  {a['severity']:<8}  {a['state']:<34}  {_when(a.get('raised_ns')):<29}  "
            f"{a['instrument']}/{a['channel']} {a['condition']}: {a.get('message') or ''}"
        )
        if a.get("acked_by"):
            lines.append(
                f"{'':<12}  acknowledged {_when(a.get('acked_ns'))} by {a['acked_by']}: {a.get('comment')}"
            )
    if not active and not recent:
        lines.append("no alarms")
    return "\n".join(lines)


def transition_line(t: dict[str, Any]) -> str:
    """One alarm transition for people (``daq tail --alarms``)."""
    who = f" by {t['actor']}: {t['comment']}" if t["kind"] == "acknowledged" else ""
    value = f" = {t['value']:.6g} {t.get('unit') or ''}".rstrip() if t.get("value") is not None else ""
    return (
        f"{human(t['ts_ns'])}  ALARM {t['kind']:<12} {t['severity']:<8} {t['instrument']}/{t['channel']} "
        f"{t['condition']}{value}  {t['id']}: {t.get('message') or ''} [{t['state']}]{who}"
    )


def follow_alarms(
    api: str,
    out: TextIO,
    *,
    as_json: bool,
    deadline: float | None,
    err: TextIO = sys.stderr,
    clock: Clock | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Print the daemon's alarm transitions until ``deadline`` (monotonic) or forever,
    reconnecting with the one backoff while the daemon does not answer
    (:func:`daq.cli.following.follow_stream`) and resuming after the last alarm event id it
    had (``since_id``), so a transition committed meanwhile is shown, and none twice."""
    last_id: int | None = None

    def handle(obj: dict[str, Any]) -> None:
        nonlocal last_id
        if obj.get("type") == "alarm":
            line = json.dumps(obj, separators=(",", ":")) if as_json else transition_line(obj)
            print(line, file=out, flush=True)
        # A transition's event_id, or the last id the stream's start covered (its live notice).
        seen = obj.get("event_id") if obj.get("type") == "alarm" else None
        if obj.get("type") == "notice":
            seen = obj.get("last_id")
        if isinstance(seen, int):
            last_id = seen

    def params(down: bool) -> list[tuple[str, str]]:
        return [("since_id", str(last_id))] if down and last_id is not None else []

    follow_stream(
        api,
        handle,
        path="/api/alarms/stream",
        what="the alarm stream",
        params=params,
        deadline=deadline,
        err=err,
        clock=clock,
        pause=pause,
    )


def main(args: argparse.Namespace) -> int:
    if args.alarms_command == "ack":
        from daq.cli.runs import call

        answer = call(args, f"/api/alarms/{args.alarm_id}/ack", {"comment": args.comment})
        if args.json:
            print(json.dumps(answer, indent=2, sort_keys=True))
        else:
            print(f"alarm {answer['id']} acknowledged by {answer['acked_by']}: now {answer['state']}")
        return 0
    if args.data_dir is not None and args.api is None:
        from daq.alarms.store import alarms
        from daq.runs.checked import open_journal

        conn = open_journal(args.data_dir)
        try:
            found = alarms(conn)
        finally:
            conn.close()
        active = [a for a in found if a["state"] != "normal"]
        finished = [a for a in found if a["state"] == "normal"]
        recent = finished if args.all else finished[:RECENT]
        listing = {"active": active, "recent": recent}
    else:
        listing = get_json(args.api or default_api(), "/api/alarms")
    if args.json:
        print(json.dumps(listing, indent=2, sort_keys=True))
    else:
        print(format_alarms(listing["active"], listing["recent"]))
    return 0
