"""Advisory peak finding: propose ROIs from a chromatogram.

The proposal helps whoever writes or reviews a method; it never changes a result, since the
validated method's ROIs decide (docs/radio-tlc.md: ROIs are fixed by Rf in the validated method).

A peak is a run of positions whose 5-point moving average stands above the baseline (the
median count) by five Poisson standard deviations or 1 % of the tallest peak, whichever is
more; its ROI is widened while the average stays one standard deviation above the baseline,
then padded by 1 mm each side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

PAD_MM = 1.0


def _smooth(values: Sequence[int], width: int = 5) -> list[float]:
    half = width // 2
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half) : i + half + 1]
        out.append(sum(window) / len(window))
    return out


def _kind_hint(rf: float) -> str:
    if rf < 0.15:
        return "free"  # retained at the origin
    if rf > 0.6:
        return "product"  # migrates near the front in the usual systems
    return "impurity"


def propose_rois(
    positions_mm: Sequence[float], counts: Sequence[int], origin_mm: float, front_mm: float
) -> list[dict[str, Any]]:
    """Proposed ROIs as ``{rf_from, rf_to, apex_mm, apex_rf, net_counts, kind_hint}``, by position."""
    n = len(counts)
    if n < 5 or n != len(positions_mm) or front_mm <= origin_mm:
        return []
    span = front_mm - origin_mm
    smooth = _smooth(counts)
    baseline = statistics.median(counts)
    sd = math.sqrt(max(baseline, 1.0))
    top = max(smooth)
    threshold = baseline + max(5 * sd, 0.01 * (top - baseline))
    edge = baseline + sd
    peaks: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if smooth[i] <= threshold:
            i += 1
            continue
        j = i
        while j + 1 < n and smooth[j + 1] > threshold:
            j += 1
        lo, hi = i, j
        while lo > 0 and smooth[lo - 1] > edge:
            lo -= 1
        while hi + 1 < n and smooth[hi + 1] > edge:
            hi += 1
        if peaks and lo <= peaks[-1][1]:
            peaks[-1] = (peaks[-1][0], max(hi, peaks[-1][1]))
        else:
            peaks.append((lo, hi))
        i = max(j, hi) + 1
    out = []
    for lo, hi in peaks:
        apex = max(range(lo, hi + 1), key=lambda k: smooth[k])
        net = sum(c - baseline for c in counts[lo : hi + 1])
        if net <= 0:
            continue
        apex_rf = (positions_mm[apex] - origin_mm) / span
        out.append(
            {
                "rf_from": round((positions_mm[lo] - PAD_MM - origin_mm) / span, 3),
                "rf_to": round((positions_mm[hi] + PAD_MM - origin_mm) / span, 3),
                "apex_mm": positions_mm[apex],
                "apex_rf": round(apex_rf, 3),
                "net_counts": round(float(net), 1),
                "kind_hint": _kind_hint(apex_rf),
            }
        )
    return out
