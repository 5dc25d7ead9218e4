"""``daq tail``: follow live readings from the running daemon, in aligned columns.

``--since 5m`` first replays the journal's recent readings. When the daemon goes away
(a restart), tail says so once, retries with a capped backoff, and on reconnecting asks for
everything since the last reading it showed, so nothing committed in between is missed;
readings already shown are skipped by their per-instrument sequence number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any, ClassVar, TextIO

from daq.api.client import ApiUnavailable, default_api, stream
from daq.api.filters import ReadingFilter, parse_duration
from daq.cli.argtypes import seconds

NAME = "tail"
HELP = "follow live readings from the running daemon (optionally replaying the last minutes first)"

BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 5.0


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


class Printer:
    """Aligned columns that widen to fit; colour by quality on a terminal (not with NO_COLOR)."""

    COLOURS: ClassVar[dict[str, str]] = {"GOOD": "\x1b[32m", "UNCERTAIN": "\x1b[33m", "BAD": "\x1b[31m"}

    def __init__(self, out: TextIO, *, as_json: bool, colour: bool | None = None):
        self.out = out
        self.as_json = as_json
        self.colour = (out.isatty() and "NO_COLOR" not in os.environ) if colour is None else colour
        self.widths = {"instrument": 10, "channel": 12, "unit": 4}

    def line(self, r: dict[str, Any]) -> str:
        if self.as_json:
            return json.dumps(r, separators=(",", ":"))
        w = self.widths
        for key in w:
            w[key] = max(w[key], len(str(r.get(key) or "")))
        stamp = datetime.fromtimestamp(r["acq_ns"] / 1e9).astimezone().isoformat(timespec="milliseconds")
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        quality = r["quality"]
        reason = f" {r['reason']}" if r.get("reason") else ""
        text = (
            f"{stamp}  {r['instrument']:<{w['instrument']}}  {r['channel']:<{w['channel']}}  "
            f"{value:>12} {r['unit']:<{w['unit']}}  "
        )
        attrs = r.get("attrs") or {}
        if "reported_value" in attrs:
            # What the instrument displayed, beside the value stored in SI units.
            shown = f"{attrs['reported_value']} {attrs.get('reported_unit', '')}".rstrip()
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


def follow(
    api: str,
    flt: ReadingFilter,
    since_ns: int | None,
    printer: Printer,
    *,
    deadline: float | None = None,
    err: TextIO = sys.stderr,
) -> None:
    """Print readings until ``deadline`` (monotonic) or forever, reconnecting as needed."""
    started_ns = time.time_ns()
    seen: dict[str, int] = {}
    last_ns: int | None = None
    backoff = BACKOFF_INITIAL_S
    down = False
    while deadline is None or time.monotonic() < deadline:
        params = flt.as_params()
        if last_ns is not None:
            params.append(("since_ns", str(last_ns)))
        elif since_ns is not None:
            params.append(("since_ns", str(since_ns)))
        elif down:
            params.append(("since_ns", str(started_ns)))
        try:
            for obj in stream(api, params):
                if down:
                    print(f"daq tail: reconnected to {api}", file=err, flush=True)
                    down = False
                backoff = BACKOFF_INITIAL_S
                if obj.get("type") == "reading":
                    inst, seq = obj["instrument"], obj["seq"]
                    if seq <= seen.get(inst, 0):
                        continue  # already shown (a replay overlaps what came live)
                    seen[inst] = seq
                    last_ns = obj["acq_ns"] if last_ns is None else max(last_ns, obj["acq_ns"])
                    printer.show(obj)
                if deadline is not None and time.monotonic() >= deadline:
                    return
            raise ApiUnavailable(f"{api} ended the stream")
        except ApiUnavailable as exc:
            if not down:
                print(f"daq tail: {exc}; retrying", file=err, flush=True)
                down = True
        pause = backoff if deadline is None else min(backoff, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        backoff = min(BACKOFF_CAP_S, backoff * 2)


def main(args: argparse.Namespace) -> int:
    try:
        flt = ReadingFilter.from_params(args.instrument, args.channel, args.quality)
    except ValueError as exc:
        print(f"daq tail: {exc}", file=sys.stderr)
        return 2
    since_ns = None if args.since is None else time.time_ns() - int(args.since * 1e9)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    printer = Printer(sys.stdout, as_json=args.json)
    try:
        follow(args.api or default_api(), flt, since_ns, printer, deadline=deadline)
    except BrokenPipeError:
        # `daq tail | head`: the reader left; exit quietly.
        sys.stderr.close()
        return 0
    return 0
