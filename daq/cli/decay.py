"""``daq decay NUCLIDE ACTIVITY UNIT --from T1 --to T2``: the decayed (or back-corrected) activity."""

from __future__ import annotations

import argparse
import math

from daq.errors import DaqError
from daq.physics import (
    NUCLIDE_TABLE_SOURCE,
    NUCLIDE_TABLE_VERSION,
    UnknownNuclide,
    UnknownUnit,
    canonical_unit,
    decay_between,
    from_bq,
    nuclide,
    to_bq,
)
from daq.timeparse import datetime_ns, parse_datetime

NAME = "decay"

HELP = "decay-correct an activity from one time to another (A = A0·exp(−λt), versioned half-lives)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("nuclide", help="e.g. F-18, Ga68, 99mTc, Lu-177, Ac-225")
    p.add_argument("activity", help="activity at --from (a number)")
    p.add_argument("unit", help="Bq, kBq, MBq, GBq, TBq, uCi, mCi, Ci")
    p.add_argument("--from", dest="t_from", required=True, metavar="T1", help="ISO 8601 time with offset")
    p.add_argument("--to", dest="t_to", required=True, metavar="T2", help="ISO 8601 time with offset")
    p.add_argument("--out-unit", default=None, help="unit of the answer (default: the input unit)")


def parse_time(text: str, option: str) -> int:
    """An ISO 8601 time with an offset (``Z`` accepted) to UTC nanoseconds (any year 1 to 9999)."""
    return datetime_ns(parse_datetime(text, option))


def _duration(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 3600:
        return f"{sign}{s / 60:.4g} min"
    if s < 3 * 86400:
        return f"{sign}{s / 3600:.4g} h"
    return f"{sign}{s / 86400:.4g} d"


def main(args: argparse.Namespace) -> int:
    try:
        nuc = nuclide(args.nuclide)
        unit = canonical_unit(args.unit)
        out_unit = canonical_unit(args.out_unit) if args.out_unit else unit
    except (UnknownNuclide, UnknownUnit) as exc:
        raise DaqError(str(exc)) from None
    try:
        a0 = float(args.activity)
    except ValueError:
        raise DaqError(f"activity {args.activity!r}: expected a number") from None
    if not math.isfinite(a0) or a0 < 0:
        raise DaqError(f"activity {args.activity!r}: expected a finite, non-negative number")
    t1 = parse_time(args.t_from, "--from")
    t2 = parse_time(args.t_to, "--to")
    try:
        # The typed text, converted exactly: "16.56 MBq" is 16560000 Bq, not a float's neighbour.
        a0_bq = to_bq(args.activity, unit)
    except ValueError as exc:
        raise DaqError(f"activity {args.activity!r}: {exc}") from None
    result = from_bq(decay_between(a0_bq, nuc.symbol, t1, t2), out_unit)
    print(f"{result:.6g} {out_unit}")
    print(
        f"  {nuc.symbol} {a0:g} {unit} at {args.t_from} -> {args.t_to} ({_duration((t2 - t1) / 1e9)}); "
        f"T½ = {_duration(nuc.half_life_s)}; nuclide table {NUCLIDE_TABLE_VERSION} ({NUCLIDE_TABLE_SOURCE})"
    )
    return 0
