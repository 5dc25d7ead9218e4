"""Radiochemical purity from a chromatogram: background, ROI integration, RCP, pass or fail.

RCP % = net counts in the product ROI / net counts in all ROIs x 100 (docs/radio-tlc.md), the
net counts being the gross counts minus the background counts of the same positions. A
negative net (an empty ROI after background subtraction) counts as zero in the RCP; the
stored ``net_counts`` keep the sign, so nothing is hidden.

The verdict is never a pass for an incomplete trace: ``passed`` is ``None`` then, as it is
when no ROI holds counts and when positions inside an ROI were never measured: a line lost to
a bad frame leaves a hole, and a scan that printed ``end`` before covering its range leaves
the rest unmeasured (the RCP figure is still shown, with a warning). With the scan's range,
the positions it should have measured are those the protocol defines
(:func:`drivers.rtlc_scanner.scan_positions_mm`), each counted once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from daq.tlc.methods import TlcMethod
from daq.tlc.peaks import propose_rois
from drivers.rtlc_scanner import STEP_MM, scan_positions_mm


def _r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def analyse(
    positions_mm: Sequence[float],
    counts: Sequence[int],
    method: TlcMethod,
    *,
    complete: bool,
    range_mm: float | None = None,
) -> dict[str, Any]:
    """Integrate ``counts`` at ``positions_mm`` with ``method``; returns the ``results`` JSON.

    ``range_mm`` is the scan's range: every position it defines that is not in the trace is
    missing (an early ``end`` included). Without it, only holes between measured positions
    are known to be missing.
    """
    if len(positions_mm) != len(counts):
        raise ValueError("positions and counts differ in length")
    span = method.front_mm - method.origin_mm
    rfs = [(x - method.origin_mm) / span for x in positions_mm]
    warnings: list[str] = []

    def inside(rf: float, lo: float, hi: float) -> bool:
        return lo <= rf < hi

    bg = method.background
    bg_points: list[int] = []
    if bg.mode == "region":
        assert bg.rf_from is not None
        assert bg.rf_to is not None
        bg_points = [c for rf, c in zip(rfs, counts, strict=True) if inside(rf, bg.rf_from, bg.rf_to)]
    elif bg.mode == "outside_rois":
        bg_points = [
            c
            for rf, c in zip(rfs, counts, strict=True)
            if not any(inside(rf, r.rf_from, r.rf_to) for r in method.rois)
        ]
    per_point = 0.0
    if bg.mode != "none":
        if bg_points:
            per_point = sum(bg_points) / len(bg_points)
        else:
            warnings.append("no scanned position in the background region; background taken as 0")

    rois: list[dict[str, Any]] = []
    beyond: list[str] = []
    for roi in method.rois:
        pts = [c for rf, c in zip(rfs, counts, strict=True) if inside(rf, roi.rf_from, roi.rf_to)]
        gross = sum(pts)
        background = per_point * len(pts)
        lo_mm, hi_mm = method.mm(roi.rf_from), method.mm(roi.rf_to)
        if range_mm is not None:
            scanned = (STEP_MM, float(range_mm))
        elif positions_mm:
            scanned = (min(positions_mm), max(positions_mm))
        else:
            scanned = None
        if scanned is not None and (lo_mm < scanned[0] - STEP_MM or hi_mm > scanned[1] + STEP_MM):
            # Part of the ROI lies where the scan never goes: its integral is truncated.
            warnings.append(f"ROI {roi.label!r} extends beyond the scanned positions: no verdict")
            beyond.append(roi.label)
        rois.append(
            {
                "label": roi.label,
                "kind": roi.kind,
                "rf_from": roi.rf_from,
                "rf_to": roi.rf_to,
                "mm_from": _r(lo_mm),
                "mm_to": _r(hi_mm),
                "points": len(pts),
                "gross_counts": gross,
                "background_counts": _r(background),
                "net_counts": _r(gross - background),
            }
        )
    total = sum(max(0.0, r["net_counts"]) for r in rois)
    product = next(r for r in rois if r["kind"] == "product")
    rcp: float | None = None
    for r in rois:
        r["percent"] = None if total <= 0 else _r(max(0.0, r["net_counts"]) / total * 100.0, 4)
    if total > 0:
        rcp = _r(max(0.0, product["net_counts"]) / total * 100.0, 4)
    else:
        warnings.append("no net counts in any ROI; RCP undefined")

    missing_mm: list[float] = []
    if range_mm is not None:
        measured = {round(x / STEP_MM) for x in positions_mm}
        missing_mm = [x for x in scan_positions_mm(range_mm) if round(x / STEP_MM) not in measured]
    else:
        for a, b in itertools.pairwise(positions_mm):
            gap = round((b - a) / STEP_MM)
            missing_mm.extend(a + k * STEP_MM for k in range(1, gap))
    in_rois = [
        x
        for x in missing_mm
        if any(r.rf_from <= (x - method.origin_mm) / span < r.rf_to for r in method.rois)
    ]
    if missing_mm:
        warnings.append(f"{len(missing_mm)} position(s) missing from the trace (bad or lost lines)")
    if in_rois:
        # A hole inside an ROI biases its integral: the figure is shown, the verdict withheld.
        warnings.append(f"{len(in_rois)} missing position(s) inside ROIs: no verdict")
    if not complete:
        warnings.append("trace incomplete (scan did not reach 'end'): no verdict")

    passed: bool | None = None
    if complete and rcp is not None and not in_rois and not beyond:
        passed = rcp >= method.limit_percent
    return {
        "method": method.name,
        "method_version": method.version,
        "product": method.product,
        "origin_mm": method.origin_mm,
        "front_mm": method.front_mm,
        "rois": rois,
        "background": {
            "mode": bg.mode,
            "rf_from": bg.rf_from,
            "rf_to": bg.rf_to,
            "points": len(bg_points),
            "counts_per_point": _r(per_point, 4),
        },
        "rcp_percent": rcp,
        "limit_percent": method.limit_percent,
        "passed": passed,
        "complete": complete,
        "points": len(counts),
        "missing_positions": len(missing_mm),
        "missing_mm": missing_mm[:100],
        "warnings": warnings,
        # Advisory only: the method's ROIs above decide.
        "proposed_rois": propose_rois(positions_mm, counts, method.origin_mm, method.front_mm),
    }
