"""What QC checks on a run report: activities at a reference time and the radiochemical yield.

- :func:`activity_table`: for each dose-calibrator channel, the last GOOD activity measured
  and the same activity decay-corrected to the reference time (EOS by default), with the
  half-life used and its source (the versioned nuclide table), and a flag when the
  calibrator's nuclide setting differs from the run's nuclide.
- :func:`radiochemical_yield`: the product activity over the starting activity, as the
  ``[report]`` section names them (``yield_start``, ``yield_product``), both as measured and
  with both decay-corrected to the reference time. Uncorrected, the yield mixes the loss by
  decay between the two measurements into the chemistry; corrected, it does not.

``A(t_ref) = A(t) · exp(−ln 2 · (t_ref − t) / T½)``, with ``T½`` from :mod:`daq.physics`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from daq.model import Quality
from daq.physics import (
    NUCLIDE_TABLE_VERSION,
    UnknownNuclide,
    UnknownUnit,
    decay_between,
    nuclide,
    to_bq,
)
from daq.runs.figures import eos_ns, is_dose_calibrator
from daq.runs.qc_settings import ReportSection
from daq.runs.store import RunData


def _attrs(row: Mapping[str, Any]) -> dict[str, Any]:
    a = row.get("attrs")
    if isinstance(a, str):
        return dict(json.loads(a)) if a else {}
    return dict(a or {})


def _symbol(text: str | None) -> str | None:
    if not text or str(text).strip().lower() in ("", "unspecified"):
        return None
    try:
        return nuclide(str(text)).symbol
    except UnknownNuclide:
        return None


def reference_ns(data: RunData, settings: ReportSection) -> tuple[int, str]:
    """The reference time of the activity table and its label (``EOS`` or ``configured``)."""
    if settings.reference == "eos":
        return eos_ns(data), "EOS (end of synthesis: the run's end)"
    when = datetime.fromisoformat(settings.reference)
    return int(when.timestamp() * 1e9), f"configured reference {settings.reference}"


def _bq(row: Mapping[str, Any]) -> float | None:
    try:
        return to_bq(float(row["value"]), str(row["unit"]))
    except (UnknownUnit, TypeError, ValueError):
        return None


def _corrected(bq: float, symbol: str | None, from_ns: int, to_ns: int) -> tuple[float | None, float | None]:
    """The activity decay-corrected to ``to_ns`` and the half-life (s) used, or Nones."""
    if symbol is None:
        return None, None
    return decay_between(bq, symbol, from_ns, to_ns), nuclide(symbol).half_life_s


def activity_table(data: RunData, ref_ns: int) -> list[dict[str, Any]]:
    """One row per dose-calibrator channel (see the module docstring)."""
    run_symbol = _symbol(data.run.get("nuclide"))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in data.rows("readings"):
        if is_dose_calibrator(r):
            by_key.setdefault(f"{r['instrument']}/{r['channel']}", []).append(r)
    out = []
    for key, rows in sorted(by_key.items()):
        good = [r for r in rows if r["quality"] == Quality.GOOD and r["value"] is not None]
        setting = str(_attrs(rows[-1]).get("nuclide") or "")
        symbol = _symbol(setting)
        entry: dict[str, Any] = {
            "channel": key,
            "nuclide_setting": setting or None,
            "nuclide": symbol,
            "run_nuclide": run_symbol,
            "mismatch": bool(run_symbol and symbol and symbol != run_symbol),
            "readings": len(rows),
            "good": len(good),
            "measured_bq": None,
            "measured_ns": None,
            "corrected_bq": None,
            "half_life_s": None,
            "nuclide_table": NUCLIDE_TABLE_VERSION,
        }
        if good:
            last = good[-1]
            bq = float(last["value"])
            corrected, half_life = _corrected(bq, symbol or run_symbol, int(last["acq_ns"]), ref_ns)
            entry.update(measured_bq=bq, measured_ns=int(last["acq_ns"]), corrected_bq=corrected,
                         half_life_s=half_life)  # fmt: skip
        out.append(entry)
    return out


def _pick(data: RunData, key: str, take: str) -> dict[str, Any] | None:
    inst, ch = key.split("/", 1)
    good = [
        r for r in data.rows("readings")
        if r["instrument"] == inst and r["channel"] == ch and r["quality"] == Quality.GOOD
        and r["value"] is not None and _bq(r) is not None
    ]  # fmt: skip
    if not good:
        return None
    if take == "first":
        return good[0]
    if take == "max":
        return max(good, key=lambda r: float(r["value"]))
    return good[-1]


def radiochemical_yield(data: RunData, settings: ReportSection, ref_ns: int) -> dict[str, Any]:
    """The yield as configured; ``configured`` is False without both channels, and
    ``problem`` says why a configured yield has no figure."""
    out: dict[str, Any] = {"configured": bool(settings.yield_start and settings.yield_product)}
    if not out["configured"]:
        return out
    assert settings.yield_start is not None
    assert settings.yield_product is not None
    run_symbol = _symbol(data.run.get("nuclide"))
    parts: dict[str, dict[str, Any]] = {}
    for name, key, take in (
        ("start", settings.yield_start, settings.yield_start_take),
        ("product", settings.yield_product, settings.yield_product_take),
    ):
        row = _pick(data, key, take)
        if row is None:
            out["problem"] = f"no GOOD activity reading on {key} ({name})"
            return out
        bq = _bq(row)
        assert bq is not None
        symbol = _symbol(_attrs(row).get("nuclide")) or run_symbol
        corrected, half_life = _corrected(bq, symbol, int(row["acq_ns"]), ref_ns)
        parts[name] = {"channel": key, "take": take, "measured_bq": bq, "measured_ns": int(row["acq_ns"]),
                       "unit": row["unit"], "value": row["value"], "nuclide": symbol,
                       "corrected_bq": corrected, "half_life_s": half_life}  # fmt: skip
    out.update(parts)
    start, product = parts["start"], parts["product"]
    ratio = product["measured_bq"] / start["measured_bq"] if start["measured_bq"] else None
    out["uncorrected_percent"] = None if ratio is None else ratio * 100
    if start["corrected_bq"] and product["corrected_bq"] is not None:
        out["corrected_percent"] = product["corrected_bq"] / start["corrected_bq"] * 100
    else:
        out["corrected_percent"] = None
        out["problem"] = "no known nuclide to decay-correct with"
    return out
