"""``daq tail``: follow live readings from the running daemon, in aligned columns.

``--since 5m`` first replays the journal's recent readings. When the daemon goes away
(a restart), tail says so once, retries with the one capped backoff, and on reconnecting asks for
everything committed after the last reading it showed (``since_id``, its journal id), so
nothing committed in between is missed and nothing is shown twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar, TextIO

from daq.api.client import ApiUnavailable, default_api, get_json
from daq.api.filters import ReadingFilter, parse_duration
from daq.cli.argtypes import seconds
from daq.cli.following import follow_stream
from daq.clock import Clock
from daq.errors import DaqError
from daq.physics import display_activity
from daq.timefmt import human

NAME = "tail"
HELP = "follow live readings from the running daemon (optionally replaying the last minutes first)"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instrument", action="append", default=[], metavar="NAME", help="only this instrument (repeatable)"
    )
    p.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="GLOB",
        help="only channels matching (e.g. 'probe_*')",
    )
    p.add_argument(
        "--quality",
        action="append",
        default=[],
        metavar="Q",
        help="only this quality: good, uncertain or bad",
    )
    p.add_argument(
        "--since",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="first replay this far back (5m, 2h)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per reading (NDJSON)")
    p.add_argument(
        "--api", default=None, metavar="URL", help=f"the daemon's API (default $DAQ_API or {default_api()})"
    )
    p.add_argument("--duration", type=seconds, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--alarms",
        action="store_true",
        help="alarm transitions (raised, acknowledged, cleared) instead of readings; starts with "
        "the alarms not in normal, and resumes after the last transition it showed when the "
        "connection is lost",
    )


class Printer:
    """Fixed-width columns (instrument 14, channel 20, value 10, unit 4), so that lines of different
    instruments line up; longer names widen their column and everything after it shifts once.
    Activities in becquerels show in the SI multiple people read (``15.04 GBq``); colour by quality
    on a terminal (not with NO_COLOR). ``--json`` prints the stored values unchanged."""

    COLOURS: ClassVar[dict[str, str]] = {"GOOD": "\x1b[32m", "UNCERTAIN": "\x1b[33m", "BAD": "\x1b[31m"}
    WIDTHS: ClassVar[dict[str, int]] = {"instrument": 14, "channel": 20, "value": 10, "unit": 4}

    def __init__(self, out: TextIO, *, as_json: bool, colour: bool | None = None):
        self.out = out
        self.as_json = as_json
        self.colour = (out.isatty() and "NO_COLOR" not in os.environ) if colour is None else colour
        self.widths = dict(self.WIDTHS)

    def line(self, r: dict[str, Any]) -> str:
        if self.as_json:
            return json.dumps(r, separators=(",", ":"))
        if r["value"] is None:
            value, unit = "-", r["unit"]
        elif r["unit"] == "Bq":
            value, unit = display_activity(r["value"])
        else:
            value, unit = f"{r['value']:.6g}", r["unit"]
        w = self.widths
        for key, text in (("instrument", r["instrument"]), ("channel", r["channel"]), ("unit", unit)):
            w[key] = max(w[key], len(str(text or "")))
        stamp = human(r["acq_ns"])
        quality = r["quality"]
        reason = f" {r['reason']}" if r.get("reason") else ""
        text = (
            f"{stamp}  {r['instrument']:<{w['instrument']}}  {r['channel']:<{w['channel']}}  "
            f"{value:>{w['value']}} {unit:<{w['unit']}}  "
        )
        attrs = r.get("attrs") or {}
        if "reported_value" in attrs:
            # What the instrument displayed, beside the value stored in SI units.
            figure = attrs.get("reported_text", attrs["reported_value"])  # as displayed
            shown = f"{figure} {attrs.get('reported_unit', '')}".rstrip()
            if attrs.get("nuclide"):
                shown += f", {attrs['nuclide']}"
            reason += f" ({shown})"
        tail = f"{quality:<9}{reason}".rstrip()
        if self.colour:
            tail = f"{self.COLOURS.get(quality, '')}{tail}\x1b[0m"
            if quality != "GOOD":
                text = f"{self.COLOURS.get(quality, '')}{text}\x1b[0m"
        return text + tail

    def show(self, r: dict[str, Any]) -> None:
        print(self.line(r), file=self.out, flush=True)


def check_filter(api: str, flt: ReadingFilter, err: TextIO = sys.stderr) -> None:
    """Refuse instruments the daemon does not have; warn when no channel it has seen matches.

    Without this, a typo in ``--instrument`` shows nothing at all, which reads as a quiet cell.
    A daemon that does not answer is left to :func:`follow`, which waits for it.
    """
    if flt.everything:
        return
    try:
        status = get_json(api, "/api/status")
    except ApiUnavailable:
        return
    instruments: dict[str, Any] = status.get("instruments") or {}
    unknown = sorted(flt.instruments - set(instruments))
    if unknown:
        raise DaqError(
            f"no instrument {', '.join(map(repr, unknown))} in the daemon at {api} "
            f"(it has: {', '.join(sorted(instruments)) or 'none'})"
        )
    if flt.channels:
        chosen = [n for n in instruments if not flt.instruments or n in flt.instruments]
        if not any(flt.match(n, ch, 0) for n in chosen for ch in instruments[n].get("channels") or {}):
            print(
                f"daq tail: no channel seen so far matches {', '.join(flt.channels)}; waiting for one",
                file=err,
                flush=True,
            )


def follow(
    api: str,
    flt: ReadingFilter,
    since_ns: int | None,
    printer: Printer,
    *,
    deadline: float | None = None,
    err: TextIO = sys.stderr,
    clock: Clock | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Print readings until ``deadline`` (monotonic) or forever, reconnecting as needed
    (:func:`daq.cli.following.follow_stream`)."""
    started_ns = time.time_ns()
    seen: dict[str, int] = {}
    last_ns: int | None = None
    #: Journal id of the last reading shown: a reconnect resumes right after it (acquisition
    #: times are not monotonic in commit order, journal ids are).
    last_id: int | None = None

    def params(down: bool) -> list[tuple[str, str]]:
        out = flt.as_params()
        if last_id is not None:
            out.append(("since_id", str(last_id)))
        elif last_ns is not None:
            out.append(("since_ns", str(last_ns)))
        elif since_ns is not None:
            out.append(("since_ns", str(since_ns)))
        elif down:
            out.append(("since_ns", str(started_ns)))
        return out

    def handle(obj: dict[str, Any]) -> None:
        nonlocal last_ns, last_id
        if obj.get("type") != "reading":
            return
        inst, seq = obj["instrument"], obj["seq"]
        if seq <= seen.get(inst, 0):
            return  # already shown (a replay overlaps what came live)
        seen[inst] = seq
        last_ns = obj["acq_ns"] if last_ns is None else max(last_ns, obj["acq_ns"])
        rid = obj.get("id")
        if isinstance(rid, int):
            last_id = rid if last_id is None else max(last_id, rid)
        printer.show(obj)

    follow_stream(api, handle, params=params, deadline=deadline, err=err, clock=clock, pause=pause)


def main(args: argparse.Namespace) -> int:
    try:
        flt = ReadingFilter.from_params(args.instrument, args.channel, args.quality)
    except ValueError as exc:
        print(f"daq tail: {exc}", file=sys.stderr)
        return 2
    since_ns = None if args.since is None else time.time_ns() - int(args.since * 1e9)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    printer = Printer(sys.stdout, as_json=args.json)
    api = args.api or default_api()
    if not args.alarms:
        check_filter(api, flt)
    try:
        if args.alarms:
            from daq.cli.alarms import follow_alarms

            follow_alarms(api, sys.stdout, as_json=args.json, deadline=deadline)
        else:
            follow(api, flt, since_ns, printer, deadline=deadline)
    except BrokenPipeError:
        # `daq tail | head`: the reader left; exit quietly.
        sys.stderr.close()
        return 0
    return 0
