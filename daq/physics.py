"""Radioactive decay, the nuclide table and activity units.

The half-lives are a versioned table with its source, because a decay-corrected figure in a
batch record is only as good as the constant behind it.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import re
from decimal import Decimal

from daq.errors import DaqError

#: Version of :data:`NUCLIDES`; stored with decay-corrected figures.
NUCLIDE_TABLE_VERSION = "2026.1"
NUCLIDE_TABLE_SOURCE = "NNDC NuDat 3 / DDEP recommended half-lives"

_MIN = 60.0
_H = 3600.0
_D = 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class Nuclide:
    symbol: str
    half_life_s: float
    source: str = NUCLIDE_TABLE_SOURCE

    @property
    def decay_constant(self) -> float:
        """λ in 1/s."""
        return math.log(2) / self.half_life_s


NUCLIDES: dict[str, Nuclide] = {
    n.symbol: n
    for n in (
        Nuclide("F-18", 109.77 * _MIN),
        Nuclide("Ga-68", 67.71 * _MIN),
        Nuclide("Tc-99m", 6.0067 * _H),
        Nuclide("Cu-64", 12.701 * _H),
        Nuclide("Zr-89", 78.41 * _H),
        Nuclide("In-111", 2.8047 * _D),
        Nuclide("I-131", 8.0252 * _D),
        Nuclide("Lu-177", 6.647 * _D),
        Nuclide("Ac-225", 9.920 * _D),
        Nuclide("Fr-221", 4.806 * _MIN),
        Nuclide("Bi-213", 45.62 * _MIN),
    )
}

_ALIASES = {re.sub(r"[^a-z0-9]", "", k.lower()): k for k in NUCLIDES}
# Instruments print nuclides in many spellings: "F18", "18F", "Tc99m", "LU-177".
for _k in list(NUCLIDES):
    _m = re.fullmatch(r"([A-Za-z]+)-(\d+)(m?)", _k)
    if _m:
        _ALIASES[f"{_m.group(2)}{_m.group(3)}{_m.group(1)}".lower()] = _k


class UnknownNuclide(DaqError):
    """A nuclide symbol not in the table."""


class UnknownUnit(DaqError):
    """An activity unit not in the table."""


def nuclide(symbol: str) -> Nuclide:
    """Look a nuclide up, tolerant of spelling (``F18``, ``18F``, ``f-18``)."""
    key = _ALIASES.get(re.sub(r"[^a-z0-9]", "", symbol.lower()))
    if key is None:
        raise UnknownNuclide(f"unknown nuclide {symbol!r}; known: {', '.join(NUCLIDES)}")
    return NUCLIDES[key]


def canonical_nuclide(text: str) -> str:
    """The table's spelling of ``text`` (``Tc99m`` -> ``Tc-99m``) when it names a known
    nuclide, else ``text`` stripped (a nuclide the table lacks keeps its given name)."""
    try:
        return nuclide(text).symbol
    except UnknownNuclide:
        return text.strip()


#: Activity units to becquerel, exactly. 1 Ci = 3.7e10 Bq exactly, so 1 mCi = 37 MBq exactly.
UNIT_FACTORS: dict[str, Decimal] = {
    "Bq": Decimal(1),
    "kBq": Decimal(10) ** 3,
    "MBq": Decimal(10) ** 6,
    "GBq": Decimal(10) ** 9,
    "TBq": Decimal(10) ** 12,
    "uCi": Decimal(37) * 10**3,
    "µCi": Decimal(37) * 10**3,
    "mCi": Decimal(37) * 10**6,
    "Ci": Decimal(37) * 10**9,
}
#: The same factors as floats (each is exactly representable).
UNIT_TO_BQ: dict[str, float] = {k: float(v) for k, v in UNIT_FACTORS.items()}
_UNIT_KEYS = {k.lower(): k for k in UNIT_TO_BQ}
# Enough digits that the product of a displayed figure and a factor is exact before the one
# rounding to float.
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Overflow])


def canonical_unit(unit: str) -> str:
    """The table's spelling of ``unit`` (case-insensitive); raises :class:`UnknownUnit`."""
    key = _UNIT_KEYS.get(unit.strip().lower())
    if key is None:
        raise UnknownUnit(f"unknown activity unit {unit!r}; known: {', '.join(UNIT_TO_BQ)}")
    return key


def to_bq(value: float | str | Decimal, unit: str) -> float:
    """Convert an activity to becquerel, rounding once.

    ``value`` is best given as the decimal text an instrument displayed (``"16.56"``): it is
    multiplied exactly by the unit's exact factor, then rounded to the nearest float, so
    16.56 MBq is 16560000.0 Bq, not the 16559999.999999998 of a float multiplication. A float
    is taken as its shortest decimal spelling (``16.56``), which is what was typed or shown.
    Raises :class:`ValueError` for text that is not a finite decimal number.
    """
    factor = UNIT_FACTORS[canonical_unit(unit)]
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        number = Decimal(repr(float(value)))
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    try:
        bq = float(_EXACT.multiply(number, factor))
    except (decimal.InvalidOperation, decimal.Overflow):
        bq = math.inf
    if not math.isfinite(bq):
        raise ValueError(f"{value!r} {unit} is out of range")
    return bq


def from_bq(value_bq: float, unit: str) -> float:
    """Convert becquerel to ``unit``."""
    return value_bq / UNIT_TO_BQ[canonical_unit(unit)]


_SI_STEPS = ("Bq", "kBq", "MBq", "GBq", "TBq")


def display_activity(value_bq: float) -> tuple[str, str]:
    """``(figure, unit)`` for people: the SI multiple that puts the figure in 1..999, four
    significant digits (``1.504e10`` Bq -> ``("15.04", "GBq")``). Storage keeps becquerels."""
    if not math.isfinite(value_bq) or value_bq == 0:
        return f"{value_bq:g}", "Bq"
    step = min(max(math.floor(math.log10(abs(value_bq)) / 3), 0), len(_SI_STEPS) - 1)
    figure = value_bq / 1000**step
    if round(abs(figure), 1) >= 1000 and step < len(_SI_STEPS) - 1:
        step, figure = step + 1, figure / 1000
    return (f"{figure:.0f}" if abs(figure) >= 1000 else f"{figure:.4g}"), _SI_STEPS[step]


class DecayOutOfRange(DaqError):
    """A back-correction so far that the activity exceeds what a float can hold."""


def decay(activity: float, symbol: str, elapsed_s: float) -> float:
    """A(t) = A0 · exp(−λ t); a negative ``elapsed_s`` corrects back in time.

    Raises :class:`DecayOutOfRange` when a back-correction overflows (the answer would exceed
    about 1.8e308); a forward decay over any span underflows quietly to 0.
    """
    exponent = -nuclide(symbol).decay_constant * elapsed_s
    try:
        return activity * math.exp(exponent)
    except OverflowError:
        raise DecayOutOfRange(
            f"correcting {symbol} back by {-elapsed_s / 86400:.4g} d ({exponent / math.log(2):.4g} "
            "half-lives) gives an activity too large to represent"
        ) from None


def decay_between(activity: float, symbol: str, from_ns: int, to_ns: int) -> float:
    """The activity at ``to_ns`` of a source that had ``activity`` at ``from_ns`` (wall times, ns).

    ``to_ns`` earlier than ``from_ns`` corrects back to a reference time.
    """
    return decay(activity, symbol, (to_ns - from_ns) / 1e9)


def bateman_chain_ratio(chain: tuple[str, ...], elapsed_s: float) -> float:
    """Activity of the last member of ``chain`` over that of the first, ``elapsed_s`` after a
    separation that left only the first (Bateman's solution; all branching taken as 1).

    For ``("Ac-225", "Fr-221", "Bi-213")`` this is how far Bi-213 has grown back towards
    equilibrium with its parent; it tends to λ_last / (λ_last − λ_first) ≈ 1.
    """
    lambdas = [nuclide(s).decay_constant for s in chain]
    t = elapsed_s
    n_last = 0.0
    for i, li in enumerate(lambdas):
        denom = 1.0
        for j, lj in enumerate(lambdas):
            if j != i:
                denom *= lj - li
        n_last += math.exp(-li * t) / denom
    product = math.prod(lambdas[:-1])
    activity_last = lambdas[-1] * product * n_last
    return activity_last / (lambdas[0] * math.exp(-lambdas[0] * t))


AC225_CHAIN = ("Ac-225", "Fr-221", "Bi-213")


def equilibrium_time_s(chain: tuple[str, ...] = AC225_CHAIN, tolerance: float = 0.01) -> float:
    """Seconds after separation until the last member of ``chain`` is within ``tolerance`` of
    its equilibrium activity ratio (bisection on :func:`bateman_chain_ratio`)."""
    lambdas = [nuclide(s).decay_constant for s in chain]
    hi = 100 * max(1 / lam for lam in lambdas[1:])
    # A hundred mean lives of the longest-lived daughter: transient equilibrium is reached.
    equilibrium = bateman_chain_ratio(chain, hi)
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if bateman_chain_ratio(chain, mid) >= (1 - tolerance) * equilibrium:
            hi = mid
        else:
            lo = mid
    return hi
