"""A radioactive source as a dose calibrator sees it: decaying activity, readout noise,
display resolution. Shared by the dose-calibrator simulators."""

from __future__ import annotations

import math
import random

from daq.clock import Clock
from daq.physics import decay, nuclide
from simulators.base import SimulatorError


class DecayingSource:
    """Activity ``a0_bq`` of ``symbol`` at the wall time ``t0_ns``; decays from there.

    ``noise`` is the relative standard deviation of one reading (ionisation-chamber noise);
    ``freeze`` makes :meth:`reading` return the first value again and again (a stale readout).
    """

    def __init__(
        self,
        symbol: str,
        a0_bq: float,
        clock: Clock,
        rng: random.Random,
        *,
        noise: float = 0.002,
        t0_ns: int | None = None,
    ):
        self.symbol = nuclide(symbol).symbol
        self.a0_bq = a0_bq
        self.clock = clock
        self.rng = rng
        self.noise = noise
        self.t0_ns = clock.time_ns() if t0_ns is None else t0_ns
        self.frozen: float | None = None

    def true_activity(self, at_ns: int | None = None) -> float:
        t = self.clock.time_ns() if at_ns is None else at_ns
        return decay(self.a0_bq, self.symbol, (t - self.t0_ns) / 1e9)

    def reading(self, freeze: bool = False) -> float:
        if freeze and self.frozen is not None:
            return self.frozen
        value = self.true_activity() * (1.0 + self.rng.gauss(0.0, self.noise))
        if freeze:
            self.frozen = value
        return value


def display(value: float, digits: int = 4) -> str:
    """Format like a calibrator display: ``digits`` significant figures, no exponent."""
    if value == 0 or not math.isfinite(value):
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def auto_range(value_bq: float, units: tuple[tuple[str, float], ...]) -> tuple[float, str]:
    """Pick the display unit the way a calibrator autoranges (largest unit with value >= 1)."""
    for unit, factor in units:
        if abs(value_bq) >= factor:
            return value_bq / factor, unit
    unit, factor = units[-1]
    return value_bq / factor, unit


SI_RANGES = (("GBq", 1e9), ("MBq", 1e6), ("kBq", 1e3), ("Bq", 1.0))
CURIE_RANGES = (("Ci", 3.7e10), ("mCi", 3.7e7), ("uCi", 3.7e4))


def ranges_option(options: dict[str, str], default: str) -> tuple[tuple[str, float], ...]:
    """The ``units=si|curie`` option: which display ranges the calibrator autoranges over."""
    units = options.pop("units", default)
    if units not in ("si", "curie"):
        raise SimulatorError("option units: expected si or curie")
    return SI_RANGES if units == "si" else CURIE_RANGES
