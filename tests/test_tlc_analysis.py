"""RCP analysis: accuracy against simulated scans with a known true RCP, the arithmetic of
background and ROI integration, the verdict rules, methods in config and advisory peaks.

RCP % = net counts in the product ROI / net counts in all ROIs x 100, after background
subtraction, with ROIs fixed by Rf in the validated method (docs/radio-tlc.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import SystemClock
from daq.configfile.load import parse_config
from daq.errors import ConfigError
from daq.tlc.analysis import analyse
from daq.tlc.methods import TlcMethod
from daq.tlc.peaks import propose_rois
from drivers.rtlc_scanner import RtlcScannerConfig, RtlcScannerDriver, Scan, scan_positions_mm
from simulators.rtlc_scanner import RtlcScannerSimulator
from tests.helpers import config_text
from tests.tlc_helpers import METHOD_TOML, NO_API


def method(**over: Any) -> TlcMethod:
    base: dict[str, Any] = {
        "name": "lu-psma-itlc",
        "version": "2",
        "origin_mm": 15.0,
        "front_mm": 85.0,
        "limit_percent": 95.0,
        "rois": [
            {"label": "free", "kind": "free", "rf_from": -0.15, "rf_to": 0.2},
            {"label": "colloid", "kind": "colloid", "rf_from": 0.25, "rf_to": 0.52},
            {"label": "product", "kind": "product", "rf_from": 0.52, "rf_to": 1.15},
        ],
        "background": {"mode": "outside_rois"},
    }
    base.update(over)
    return TlcMethod.model_validate(base)


async def simulated_scan(seed: int, **options: str) -> Scan:
    """One whole scan from the simulator over a real socket, read by the driver."""
    sim = RtlcScannerSimulator(seed=seed, options={"time_scale": "0", "home_s": "0", **options})
    listener = await sim.serve("tcp://127.0.0.1:0")
    driver = RtlcScannerDriver(RtlcScannerConfig(name="tlc1", kind="rtlc-scanner", port=listener.url),
                               SystemClock())  # fmt: skip
    try:
        await driver.connect()
        scan = await driver.start_scan(range_mm=100, time_min=5)
        while not scan.done.is_set():
            await driver.read()
    finally:
        await driver.close()
        await listener.close()
    assert scan.complete
    return scan


@pytest.mark.parametrize("product", ["lu177-psma", "ac225-psma"])
@pytest.mark.parametrize("true_rcp", [97.0, 88.0])
@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_simulated_scans_are_analysed_within_one_point(
    product: str, true_rcp: float, seed: int
) -> None:
    scan = await simulated_scan(seed, product=product, rcp=str(true_rcp))
    res = analyse(scan.positions_mm, scan.counts, method(), complete=scan.complete)
    assert res["rcp_percent"] == pytest.approx(true_rcp, abs=1.0)
    assert res["passed"] is (true_rcp >= 95.0)
    assert res["complete"] is True
    assert res["missing_positions"] == 0
    # Peak finding sees both bands, even the 3 % free nuclide (advisory only).
    assert [p["kind_hint"] for p in res["proposed_rois"]] == ["free", "product"]


async def test_colloid_band_is_integrated_as_an_impurity() -> None:
    scan = await simulated_scan(7, rcp="90", colloid="5")
    res = analyse(scan.positions_mm, scan.counts, method(), complete=True)
    by = {r["label"]: r for r in res["rois"]}
    assert res["rcp_percent"] == pytest.approx(90.0, abs=1.0)
    assert by["colloid"]["percent"] == pytest.approx(5.0, abs=1.0)
    assert by["free"]["percent"] == pytest.approx(5.0, abs=1.0)
    assert res["passed"] is False


def test_background_and_roi_arithmetic() -> None:
    # origin 10 mm, front 60 mm (Rf = (x - 10) / 50); 0.5 mm steps from 0.5 to 70 mm.
    positions = [k * 0.5 for k in range(1, 141)]
    counts = [2] * len(positions)
    for i, x in enumerate(positions):
        if 9.0 <= x < 11.0:  # free at the origin: 4 positions of 27 = 25 net each
            counts[i] = 27
        if 54.0 <= x < 56.0:  # product at Rf 0.9: 4 positions of 477 = 475 net each
            counts[i] = 477
    m = method(
        origin_mm=10.0,
        front_mm=60.0,
        rois=[
            {"label": "free", "kind": "free", "rf_from": -0.1, "rf_to": 0.1},
            {"label": "product", "kind": "product", "rf_from": 0.7, "rf_to": 1.1},
        ],
        background={"mode": "region", "rf_from": 1.15, "rf_to": 1.2},
    )
    res = analyse(positions, counts, m, complete=True)
    free, product = res["rois"]
    assert res["background"]["counts_per_point"] == 2.0
    assert res["background"]["points"] == 5  # 67.5 .. 69.5 mm
    assert free["points"] == 20  # 5.0 .. 14.5 mm
    assert free["gross_counts"] == 4 * 27 + 16 * 2
    assert free["background_counts"] == 40.0
    assert free["net_counts"] == 100.0
    assert product["points"] == 40  # 45.0 .. 64.5 mm
    assert product["net_counts"] == 1900.0
    assert (free["mm_from"], free["mm_to"]) == (5.0, 15.0)
    assert res["rcp_percent"] == 95.0
    assert res["passed"] is True  # RCP >= limit
    assert product["percent"] == 95.0
    assert free["percent"] == 5.0


def test_an_incomplete_trace_is_never_a_pass() -> None:
    positions = [k * 0.5 for k in range(1, 201)]
    counts = [1000 if 75 <= x < 78 else 1 for x in positions]
    res = analyse(positions, counts, method(), complete=False)
    assert res["rcp_percent"] == pytest.approx(100.0)
    assert res["passed"] is None
    assert any("incomplete" in w for w in res["warnings"])


def test_no_counts_gives_no_verdict_and_missing_positions_are_reported() -> None:
    positions = [k * 0.5 for k in range(1, 201) if k not in (50, 51)]
    res = analyse(positions, [0] * len(positions), method(), complete=True)
    assert res["rcp_percent"] is None
    assert res["passed"] is None
    assert res["missing_positions"] == 2
    assert any("missing" in w for w in res["warnings"])


def test_negative_net_counts_are_kept_but_count_as_zero_in_the_rcp() -> None:
    positions = [k * 0.5 for k in range(1, 201)]
    counts = [5] * len(positions)
    for i, x in enumerate(positions):
        if 70 <= x < 80:
            counts[i] = 500
        if 14 <= x < 16:
            counts[i] = 0
    m = method(background={"mode": "region", "rf_from": 1.16, "rf_to": 1.2})
    res = analyse(positions, counts, m, complete=True)
    free = next(r for r in res["rois"] if r["label"] == "free")
    assert free["net_counts"] < 0
    assert res["rcp_percent"] == 100.0


async def test_peak_proposals_are_advisory() -> None:
    scan = await simulated_scan(5, rcp="80")
    res = analyse(scan.positions_mm, scan.counts, method(), complete=True)
    proposals = propose_rois(scan.positions_mm, scan.counts, 15.0, 85.0)
    assert res["proposed_rois"] == proposals
    assert [p["kind_hint"] for p in proposals] == ["free", "product"]
    assert proposals[0]["apex_rf"] == pytest.approx(0.0, abs=0.05)
    assert proposals[1]["apex_rf"] == pytest.approx(0.85, abs=0.05)
    # The method's ROIs decide: a narrower proposal does not change the result.
    assert [r["label"] for r in res["rois"]] == ["free", "colloid", "product"]
    assert res["rcp_percent"] == pytest.approx(80.0, abs=1.0)
    assert propose_rois([], [], 15.0, 85.0) == []
    assert propose_rois([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0] * 6, 15.0, 85.0) == []


def test_methods_load_from_config(tmp_path: Path) -> None:
    cfg = parse_config(config_text(tmp_path, [], METHOD_TOML + NO_API), path="m.toml")
    m = cfg.model.tlc.get("lu-psma-itlc")
    assert m.version == "2"
    assert [r.kind for r in m.rois] == ["free", "colloid", "product"]
    assert m.mm(1.0) == 85.0


BAD_METHODS = [
    ("rf_to = 1.15", "rf_to = 0.2", "tlc.methods[0].rois[2]", "must exceed rf_from"),
    ('kind = "colloid"', 'kind = "product"', "tlc.methods[0]", "exactly one ROI"),
    ("rf_from = 0.25", "rf_from = 0.1", "tlc.methods[0]", "overlap"),
    ("front_mm = 85.0", "front_mm = 10.0", "tlc.methods[0]", "must be beyond origin_mm"),
    ('mode = "outside_rois"', 'mode = "region"', "tlc.methods[0].background", "needs rf_from and rf_to"),
    ("limit_percent = 95.0", "limit_percent = 95.0\nwobble = 1", "tlc.methods[0].wobble", "unknown key"),
]


@pytest.mark.parametrize(("old", "new", "key_path", "message"), BAD_METHODS)
def test_bad_methods_name_file_key_and_expectation(
    tmp_path: Path, old: str, new: str, key_path: str, message: str
) -> None:
    assert old in METHOD_TOML
    text = config_text(tmp_path, [], METHOD_TOML.replace(old, new, 1) + NO_API)
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="m.toml")
    assert info.value.file == "m.toml"
    assert info.value.key_path == key_path
    assert message in str(info.value)


def test_scanner_naming_an_unknown_method_is_a_config_error(tmp_path: Path) -> None:
    inst = {"name": "tlc1", "kind": "rtlc-scanner", "port": "socket://127.0.0.1:9", "method": "nope"}
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(tmp_path, [inst], METHOD_TOML + NO_API), path="m.toml")
    assert info.value.key_path == "instruments[0].method"
    assert "no [[tlc.methods]] entry named 'nope'" in str(info.value)
    inst["method"] = "lu-psma-itlc"
    inst["batch"] = "A,B"
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(tmp_path, [inst], METHOD_TOML + NO_API), path="m.toml")
    assert info.value.key_path == "instruments[0].batch"


def test_a_position_missing_inside_an_roi_withholds_the_verdict() -> None:
    positions = [k * 0.5 for k in range(1, 201)]
    counts = [1000 if 72 <= x < 76 else 2 for x in positions]
    outside = [(x, c) for x, c in zip(positions, counts, strict=True) if x != 50.0]  # Rf 0.5: colloid ROI
    res = analyse([x for x, _ in outside], [c for _, c in outside], method(), complete=True)
    assert res["missing_positions"] == 1
    assert res["missing_mm"] == [50.0]
    assert res["passed"] is None
    assert res["rcp_percent"] == pytest.approx(100.0)
    between = [(x, c) for x, c in zip(positions, counts, strict=True) if x != 32.0]  # Rf 0.243: no ROI
    res = analyse([x for x, _ in between], [c for _, c in between], method(), complete=True)
    assert res["missing_positions"] == 1
    assert res["passed"] is True


@given(st.integers(1, 200), st.sets(st.integers(1, 200), max_size=20))
def test_with_the_range_every_unmeasured_position_counts_once(last: int, holes: set[int]) -> None:
    # A scan of 100 mm (positions 0.5 .. 100 mm) that said 'end' after position ``last`` and
    # lost the lines ``holes``.
    positions = [k * 0.5 for k in range(1, last + 1) if k not in holes]
    counts = [1000 if 75 <= x < 78 else 1 for x in positions]
    m = method()
    res = analyse(positions, counts, m, complete=True, range_mm=100)
    assert res["missing_positions"] == 200 - len(positions)
    assert res["points"] == len(positions)
    span = m.front_mm - m.origin_mm
    missing = [k * 0.5 for k in range(1, 201) if k * 0.5 not in positions]
    in_roi = [x for x in missing if any(r.rf_from <= (x - m.origin_mm) / span < r.rf_to for r in m.rois)]
    if in_roi:
        assert res["passed"] is None
    elif res["rcp_percent"] is not None:
        assert res["passed"] is (res["rcp_percent"] >= m.limit_percent)


def test_an_roi_beyond_the_scan_range_withholds_the_verdict() -> None:
    positions = [k * 0.5 for k in range(1, 161)]  # a scan of 80 mm: the product ROI reaches 95.5 mm
    counts = [1000 if 75 <= x < 78 else 1 for x in positions]
    res = analyse(positions, counts, method(), complete=True, range_mm=80)
    assert res["missing_positions"] == 0
    assert res["passed"] is None
    assert any("beyond the scanned positions" in w for w in res["warnings"])


def test_scan_positions_are_defined_once() -> None:
    assert scan_positions_mm(100)[:2] == [0.5, 1.0]
    assert scan_positions_mm(100)[-1] == 100.0
    assert len(scan_positions_mm(100)) == 200
