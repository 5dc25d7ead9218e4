"""Decay physics: the nuclide table, the unit table, decay correction, and the simulators'
sources seen through the real drivers on an injected clock."""

from __future__ import annotations

import math
import subprocess
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import ManualClock
from daq.physics import (
    NUCLIDE_TABLE_SOURCE,
    NUCLIDE_TABLE_VERSION,
    NUCLIDES,
    UNIT_TO_BQ,
    bateman_chain_ratio,
    decay,
    decay_between,
    equilibrium_time_s,
    nuclide,
    to_bq,
)
from drivers import REGISTRY
from tests.calibrators import PAIR
from tests.proc import DAQ

# docs/instruments.md, the nuclide table (NNDC/DDEP).
HALF_LIVES_S = {
    "F-18": 109.77 * 60, "Ga-68": 67.71 * 60, "Tc-99m": 6.0067 * 3600, "Cu-64": 12.701 * 3600,
    "Zr-89": 78.41 * 3600, "In-111": 2.8047 * 86400, "I-131": 8.0252 * 86400, "Lu-177": 6.647 * 86400,
    "Ac-225": 9.920 * 86400, "Fr-221": 4.806 * 60, "Bi-213": 45.62 * 60,
}  # fmt: skip


def test_nuclide_table_is_versioned_and_complete() -> None:
    assert NUCLIDE_TABLE_VERSION
    assert "NNDC" in NUCLIDE_TABLE_SOURCE
    for symbol, half_life in HALF_LIVES_S.items():
        assert NUCLIDES[symbol].half_life_s == pytest.approx(half_life, rel=1e-12)


@pytest.mark.parametrize(("spelling", "symbol"), [("F18", "F-18"), ("18F", "F-18"), ("tc99m", "Tc-99m"),
                                                   ("99mTc", "Tc-99m"), ("AC-225", "Ac-225"), ("Lu177", "Lu-177")])  # fmt: skip
def test_nuclide_spellings(spelling: str, symbol: str) -> None:
    assert nuclide(spelling).symbol == symbol


def test_one_millicurie_is_exactly_37_megabecquerel() -> None:
    assert UNIT_TO_BQ["mCi"] == 37 * UNIT_TO_BQ["MBq"]
    assert to_bq(1, "mCi") == 37e6
    assert to_bq(1, "Ci") == 3.7e10
    assert to_bq(1, "uCi") == 37e3
    assert to_bq(2, "GBq") == 2e9
    assert to_bq(5, "kBq") == 5e3


def test_decay_over_one_half_life_and_back() -> None:
    t = HALF_LIVES_S["F-18"]
    assert decay(1000.0, "F-18", t) == pytest.approx(500.0)
    assert decay(500.0, "F-18", -t) == pytest.approx(1000.0)
    t0 = 1_767_225_600 * 10**9
    assert decay_between(1000.0, "Ga-68", t0, t0 + int(2 * HALF_LIVES_S["Ga-68"] * 1e9)) == pytest.approx(
        250.0
    )


def test_ac225_daughters_reach_equilibrium_as_documented() -> None:
    # docs/instruments.md (the equilibrium gate): the default wait of 5.3 h covers Bi-213, and
    # Fr-221 is within 1 % after about half an hour.
    fr = equilibrium_time_s(("Ac-225", "Fr-221"), 0.01)
    bi = equilibrium_time_s(("Ac-225", "Fr-221", "Bi-213"), 0.01)
    assert 28 * 60 < fr < 36 * 60
    assert 5.0 * 3600 < bi < 5.4 * 3600
    assert bateman_chain_ratio(("Ac-225", "Fr-221", "Bi-213"), 600) < 0.2  # ten minutes: far from it
    assert bateman_chain_ratio(("Ac-225", "Fr-221", "Bi-213"), 5.3 * 3600) > 0.99


@pytest.mark.parametrize("pair_id", ["crc35r-1", "atomlab500", "vik202", "vdc404"])
@pytest.mark.parametrize("symbol", ["F-18", "Ac-225"])
@pytest.mark.parametrize("noise", [0.0, 0.002])
async def test_ten_simulated_minutes_follow_the_decay_law(pair_id: str, symbol: str, noise: float) -> None:
    pair = PAIR[pair_id.removesuffix("-1")]
    clock = ManualClock()
    compact = symbol.replace("-", "")
    options = {
        **pair.options,
        "nuclide": compact if pair.kind == "capintec-crc35r" else symbol,
        "noise": str(noise),
    }
    if pair.kind == "capintec-crc35r":
        options["chambers"] = "1"
    if pair.kind == "veenstra-vdc404":
        options.pop("noise")  # the VDC-404 simulator keeps its default noise (0.2 %)
        noise = 0.002
    sim = type(pair.simulator())(options=options, clock=clock, seed=7)
    listener = await sim.serve("tcp://127.0.0.1:0")
    driver_cls = REGISTRY[pair.kind]
    config = {k: v for k, v in pair.instrument("dc", listener.url).items() if k != "chambers"}
    driver = driver_cls(driver_cls.config_model.model_validate(config), clock)
    got: list[tuple[int, float]] = []
    try:
        await driver.connect()
        for _ in range(11):
            readings = [r for r in await driver.read() if r.value is not None]
            got.extend((r.acq_ns, r.value) for r in readings[:1] if r.value is not None)
            clock.advance(60.0)
    finally:
        await driver.close()
        await listener.close()
    assert len(got) >= 10
    t_first, a_first = got[0]
    lam = math.log(2) / HALF_LIVES_S[symbol]
    # A0 is the first reading's expectation; 4 significant figures of display + 5 sigma of noise.
    tolerance = 5 * noise + 1e-3
    a0 = a_first
    ratios = [v / (a0 * math.exp(-lam * (t - t_first) / 1e9)) for t, v in got]
    assert all(abs(r - 1) < 2 * tolerance for r in ratios), ratios
    assert (got[-1][0] - t_first) / 1e9 >= 540
    if symbol == "F-18" and noise == 0.0:
        # Ten minutes of F-18 lose 6 %: the readings follow the law, not a constant.
        assert got[-1][1] / a_first == pytest.approx(math.exp(-lam * (got[-1][0] - t_first) / 1e9), rel=2e-3)


def test_daq_decay_prints_the_decayed_activity() -> None:
    out = subprocess.run(
        [*DAQ, "decay", "F-18", "1000", "MBq", "--from", "2026-03-01T09:00:00+01:00", "--to", "2026-03-01T09:49:46.2Z"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    first = out.splitlines()[0]
    value, unit = first.split()
    assert unit == "MBq"
    assert float(value) == pytest.approx(500.0, rel=1e-5)
    assert "2026.1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["X-99", "1", "MBq", "--from", "2026-03-01T09:00:00Z", "--to", "2026-03-01T10:00:00Z"],
            "unknown nuclide",
        ),
        (
            ["F-18", "1", "furlong", "--from", "2026-03-01T09:00:00Z", "--to", "2026-03-01T10:00:00Z"],
            "unknown activity unit",
        ),
        (["F-18", "1", "MBq", "--from", "2026-03-01T09:00:00", "--to", "2026-03-01T10:00:00Z"], "UTC offset"),
        (
            ["F-18", "one", "MBq", "--from", "2026-03-01T09:00:00Z", "--to", "2026-03-01T10:00:00Z"],
            "expected a number",
        ),
    ],
)
def test_daq_decay_rejects_bad_input_clearly(args: list[str], message: str) -> None:
    proc = subprocess.run([*DAQ, "decay", *args], capture_output=True, text=True)
    assert proc.returncode == 1
    assert message in proc.stderr


# -- exact conversion of a displayed figure ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "bq"),
    [("16.56", "MBq", 16560000.0), ("9.322", "mCi", 344914000.0), ("32.01", "GBq", 32010000000.0),
     ("7.400", "GBq", 7400000000.0), ("0.512", "uCi", 18944.0), ("1", "Ci", 3.7e10)],
)  # fmt: skip
def test_to_bq_converts_the_displayed_text_exactly(text: str, unit: str, bq: float) -> None:
    assert to_bq(text, unit) == bq
    assert to_bq(float(text), unit) == bq  # a float is taken as its shortest decimal spelling


@given(
    st.decimals(min_value=0, max_value=99999, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["kBq", "MBq", "GBq", "uCi", "mCi", "Ci"]),
)
def test_to_bq_rounds_once(figure: Decimal, unit: str) -> None:
    factor = {
        "kBq": 10**3,
        "MBq": 10**6,
        "GBq": 10**9,
        "uCi": 37 * 10**3,
        "mCi": 37 * 10**6,
        "Ci": 37 * 10**9,
    }
    assert to_bq(str(figure), unit) == float(figure * factor[unit])


@pytest.mark.fuzz
@given(st.text(max_size=30))
def test_to_bq_text_only_raises_value_error(text: str) -> None:
    try:
        bq = to_bq(text, "MBq")
    except ValueError:
        pass
    else:
        assert math.isfinite(bq)
