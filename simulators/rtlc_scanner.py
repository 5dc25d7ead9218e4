"""Open radio-TLC scanner simulator: realistic chromatograms on the real line protocol.

Protocol facts (docs/instruments.md, "Radio-TLC scanner"): the host sends
``batch,operator,range_mm,time_min\\n``; the scanner returns to the origin, steps 0.5 mm at a
time counting for ``time_min x 60 / (range_mm x 2)`` s per position, prints
``<position mm x 10>; <counts>`` per position (space after the semicolon), then ``end``; a
failure prints ``Error: <text>``. Lines end CR LF (an Arduino ``println``).

The strip carries the configured product's species: the labelled product near the solvent
front, free nuclide at the origin and, optionally, a colloid/impurity band. Each species is
a peak (the product tails towards the origin, as a labelled peptide on a TLC strip does);
the detector sees a window of ``window_mm`` around its position; counts are Poisson with a
flat background. The true RCP is an option, so an analysis can be checked against it.

Options (``--set KEY=VALUE``): ``product`` (``lu177-psma`` or ``ac225-psma``), ``rcp``
(true RCP in %), ``colloid`` (% of the activity in the colloid band), ``colloid_rf``,
``product_rf``, ``origin_mm``, ``front_mm``, ``activity_cps`` (count rate of the whole spot
under the detector window), ``background_cps``, ``window_mm``, ``home_s`` (time to return to
the origin) and ``time_scale`` (1 = real speed; 0.01 scans a 5-minute strip in 3 s).

Faults: those of :mod:`simulators.base`, plus ``abort`` (probability per scan of stopping
part-way with ``Error: motor stalled`` instead of reaching ``end``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from typing import ClassVar

from simulators.base import FaultyWire, SerialSimulator, SimulatorError, float_option

STEP_MM = 0.5
_GRID_MM = 0.05


@dataclasses.dataclass(frozen=True)
class ProductModel:
    """How one product behaves on its validated TLC system (defaults; options override)."""

    label: str
    product_rf: float
    product_sigma_mm: float
    product_tail_mm: float
    free_sigma_mm: float
    colloid_sigma_mm: float
    activity_cps: float
    background_cps: float


PRODUCTS: dict[str, ProductModel] = {
    # A few MBq of [177Lu]Lu-PSMA spotted: a strong gamma source for a NaI scanner.
    "lu177-psma": ProductModel("[177Lu]Lu-PSMA", 0.85, 2.0, 1.5, 1.5, 2.5, 5000.0, 2.0),
    # [225Ac]Ac-PSMA is spotted at kBq level and seen through its daughters: fewer counts,
    # broader bands.
    "ac225-psma": ProductModel("[225Ac]Ac-PSMA", 0.80, 2.8, 2.0, 2.0, 3.0, 2500.0, 1.0),
}


def _gauss_pdf(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def _tailing_pdf(x: float, mu: float, sigma: float, tau: float) -> float:
    """An exponentially modified Gaussian whose tail points towards the origin (lower x)."""
    if tau <= 0:
        return _gauss_pdf(x, mu, sigma)
    lam = 1.0 / tau
    # Mirror: the usual EMG tails to the right; here x -> -x.
    xm, mum = -x, -mu
    arg = (mum + lam * sigma * sigma - xm) / (math.sqrt(2) * sigma)
    expo = (lam / 2) * (2 * mum + lam * sigma * sigma - 2 * xm)
    if expo > 700:
        return 0.0
    return (lam / 2) * math.exp(expo) * math.erfc(arg)


@dataclasses.dataclass
class Strip:
    """Species on a developed strip; :meth:`expected_counts` is the noiseless chromatogram."""

    origin_mm: float
    front_mm: float
    rcp: float
    colloid: float
    colloid_rf: float
    model: ProductModel
    product_rf: float
    activity_cps: float
    background_cps: float
    window_mm: float

    def species(self) -> list[tuple[float, float, float, float]]:
        """(fraction, centre mm, sigma mm, tail mm) of each species."""
        span = self.front_mm - self.origin_mm
        free = max(0.0, 100.0 - self.rcp - self.colloid) / 100.0
        m = self.model
        out = [
            (
                self.rcp / 100.0,
                self.origin_mm + self.product_rf * span,
                m.product_sigma_mm,
                m.product_tail_mm,
            ),
            (free, self.origin_mm, m.free_sigma_mm, 0.0),
        ]
        if self.colloid > 0:
            out.append(
                (self.colloid / 100.0, self.origin_mm + self.colloid_rf * span, m.colloid_sigma_mm, 0.0)
            )
        return out

    def expected_counts(self, positions_mm: list[float], dwell_s: float) -> list[float]:
        lo = min(positions_mm) - self.window_mm - 20.0
        hi = max(positions_mm) + self.window_mm + 20.0
        n = int((hi - lo) / _GRID_MM) + 1
        grid = [lo + i * _GRID_MM for i in range(n)]
        cumulative = [0.0] * n
        for fraction, mu, sigma, tail in self.species():
            if fraction <= 0:
                continue
            dens = [_tailing_pdf(x, mu, sigma, tail) for x in grid]
            total = sum(dens)
            if total <= 0:
                continue
            acc = 0.0
            for i, d in enumerate(dens):
                acc += d / total
                cumulative[i] += fraction * acc

        def cdf(x: float) -> float:
            i = (x - lo) / _GRID_MM
            if i <= 0:
                return 0.0
            if i >= n - 1:
                return cumulative[-1]
            k = int(i)
            return cumulative[k] + (cumulative[k + 1] - cumulative[k]) * (i - k)

        half = self.window_mm / 2
        return [
            dwell_s * (self.background_cps + self.activity_cps * (cdf(x + half) - cdf(x - half)))
            for x in positions_mm
        ]


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson variate (Knuth below 30; Hörmann's PTRS transformed rejection above)."""
    if lam <= 0:
        return 0
    if lam < 30:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return int(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b) <= -lam + k * loglam - math.lgamma(
            k + 1
        ):
            return int(k)


class RtlcScannerSimulator(SerialSimulator):
    kind = "rtlc-scanner"
    description = "open radio-TLC scanner (host-started scans, 'position; counts' lines, 9600 baud)"
    extra_faults: ClassVar[dict[str, str]] = {
        "abort": "probability per scan of stopping with 'Error: motor stalled' before 'end'"
    }

    def configure(self, options: dict[str, str]) -> None:
        product = options.pop("product", "lu177-psma")
        if product not in PRODUCTS:
            raise SimulatorError(f"option product={product!r}: expected one of {', '.join(PRODUCTS)}")
        self.model = PRODUCTS[product]
        self.rcp = float_option(options, "rcp", 97.0)
        self.colloid = float_option(options, "colloid", 0.0)
        if not (0 <= self.rcp <= 100 and 0 <= self.colloid <= 100 - self.rcp):
            raise SimulatorError("options rcp and colloid: percentages with rcp + colloid <= 100")
        self.colloid_rf = float_option(options, "colloid_rf", 0.4)
        self.product_rf = float_option(options, "product_rf", self.model.product_rf)
        self.origin_mm = float_option(options, "origin_mm", 15.0)
        self.front_mm = float_option(options, "front_mm", 85.0)
        if self.front_mm <= self.origin_mm:
            raise SimulatorError("option front_mm must be beyond origin_mm")
        self.activity_cps = float_option(options, "activity_cps", self.model.activity_cps)
        self.background_cps = float_option(options, "background_cps", self.model.background_cps)
        self.window_mm = float_option(options, "window_mm", 2.0)
        self.home_s = float_option(options, "home_s", 3.0)
        self.time_scale = float_option(options, "time_scale", 1.0)
        if self.time_scale < 0 or self.window_mm <= 0 or self.activity_cps < 0 or self.background_cps < 0:
            raise SimulatorError("options time_scale, window_mm, activity_cps, background_cps: not negative")
        self.reject_unknown(options)
        self.scans = 0

    def strip(self) -> Strip:
        return Strip(
            origin_mm=self.origin_mm,
            front_mm=self.front_mm,
            rcp=self.rcp,
            colloid=self.colloid,
            colloid_rf=self.colloid_rf,
            model=self.model,
            product_rf=self.product_rf,
            activity_cps=self.activity_cps,
            background_cps=self.background_cps,
            window_mm=self.window_mm,
        )

    @staticmethod
    def parse_start(raw: bytes) -> tuple[str, str, int, int]:
        text = raw.decode("ascii", errors="replace").strip()
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError("expected batch,operator,range_mm,time_min")
        batch, operator, rng, minutes = parts
        range_mm, time_min = int(rng), int(minutes)
        if not (1 <= range_mm <= 1000 and 1 <= time_min <= 1440):
            raise ValueError("range or time out of bounds")
        return batch, operator, range_mm, time_min

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        while True:
            raw = await reader.readuntil(b"\n")
            self.requests.append(raw)
            if not raw.strip():
                continue
            try:
                _, _, range_mm, time_min = self.parse_start(raw)
            except ValueError:
                await wire.send(b"Error: bad start line\r\n")
                continue
            await self.scan(wire, range_mm, time_min)

    async def scan(self, wire: FaultyWire, range_mm: int, time_min: int) -> None:
        self.scans += 1
        dwell = time_min * 60.0 / (range_mm * 2)
        steps = range_mm * 2
        positions = [(k + 1) * STEP_MM for k in range(steps)]
        expected = self.strip().expected_counts(positions, dwell)
        abort_at = None
        p_abort = self.faults.get("abort", 0.0)
        if p_abort > 0 and self.rng.random() < p_abort:
            abort_at = self.rng.randrange(max(1, steps // 10), max(2, steps * 9 // 10))
        frozen: int | None = None
        await self._pause(self.home_s)
        for k, (x, lam) in enumerate(zip(positions, expected, strict=True)):
            if abort_at is not None and k == abort_at:
                await wire.send(b"Error: motor stalled\r\n")
                return
            await self._pause(dwell)
            counts = poisson(self.rng, lam)
            if self.faults.get("freeze"):
                frozen = counts if frozen is None else frozen
                counts = frozen
            await wire.send(f"{round(x * 10)}; {counts}\r\n".encode("ascii"))
        await wire.send(b"end\r\n")
        await self._pause(self.home_s)
