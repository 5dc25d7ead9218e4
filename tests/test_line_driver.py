"""The configurable ``line`` driver: config checks, its parser, and both modes on the wire.

The simulator's line format is this project's own, illustrative one (simulators/line.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from daq.clock import ManualClock, SystemClock
from daq.errors import ConfigError, ProtocolError
from daq.model import Quality, Reading
from drivers.line import LineConfig, LineDriver, LineParser, display_figure
from simulators.line import PATTERN, TIME_FORMAT, LineSimulator
from tests.helpers import make_config


def cfg(**kw: object) -> LineConfig:
    base: dict[str, object] = {"name": "l", "kind": "line", "port": "/dev/ttyS0", "pattern": PATTERN,
                               "device_time_format": TIME_FORMAT}  # fmt: skip
    return LineConfig.model_validate({**base, **kw})


def test_golden_line_with_device_time() -> None:
    parser = LineParser(cfg())
    value, unit, nuclide, device_ns = parser.parse(b"A=1.202 GBq N=Ga-68 T=2026-01-01 00:00:05\r\n")
    assert (value, unit, nuclide) == ("1.202", "GBq", "Ga-68")
    assert device_ns == int(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp()) * 10**9


def test_device_time_in_a_local_zone() -> None:
    parser = LineParser(cfg(device_tz="Europe/Amsterdam"))
    *_, device_ns = parser.parse(b"A=1 MBq N=F18 T=2026-07-01 12:00:00\r\n")
    assert device_ns == int(datetime(2026, 7, 1, 10, 0, 0, tzinfo=UTC).timestamp()) * 10**9


def test_fixed_unit_and_nuclide_and_other_terminator_and_encoding() -> None:
    c = cfg(pattern=r"^ACT (?P<activity>[0-9.]+)$", unit="mCi", nuclide="Tc-99m", terminator="\\x03",
            encoding="latin-1", device_time_format=None)  # fmt: skip
    parser = LineParser(c)
    assert parser.terminator == b"\x03"
    assert parser.parse(b"ACT 12.5\x03") == ("12.5", "mCi", "Tc-99m", None)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"pattern": r"(?P<value>\d+) (?P<unit>\w+)"}, "(?P<activity>"),
        ({"pattern": r"(?P<activity>\d+)", "device_time_format": None}, "'unit' must be set"),
        ({"pattern": "(?P<activity>[", "unit": "MBq"}, "not a valid regular expression"),
        ({"unit": "furlong"}, "unknown activity unit"),
        ({"encoding": "klingon"}, "unknown encoding"),
        ({"device_tz": "Mars/Olympus"}, "unknown time zone"),
        ({"device_time_format": None}, "device_time_format"),
    ],
)
def test_config_errors_are_clear(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("?", r"\?")):
        cfg(**keys)


def test_config_error_names_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, [{"name": "l", "kind": "line", "port": "/dev/ttyS0", "pattern": "(?P<x>1)"}])
    assert info.value.file == "test.toml"
    assert info.value.key_path is not None
    assert info.value.key_path.startswith("instruments[0].pattern")


@pytest.mark.fuzz
@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        figure, _, _, _ = LineParser(cfg()).parse(raw)
    except ProtocolError as exc:
        assert exc.raw == raw
    else:
        assert float(figure) == float(figure)


@pytest.mark.parametrize("listen", ["tcp://127.0.0.1:0", "pty"])
async def test_polled_mode_sends_the_command(listen: str) -> None:
    clock = ManualClock()
    sim = LineSimulator(options={"poll": "1", "nuclide": "Lu-177"}, clock=clock)
    listener = await sim.serve(listen)
    driver = LineDriver(cfg(port=listener.url, poll_command="RD"), clock)
    try:
        await driver.connect()
        [reading] = await driver.read()
    finally:
        await driver.close()
        await listener.close()
    assert not driver.streaming
    assert sim.requests == [b"RD\r"]
    assert reading.attrs is not None
    assert reading.attrs["nuclide"] == "Lu-177"
    assert reading.device_ns == clock.time_ns() // 10**9 * 10**9
    assert reading.value == pytest.approx(1.2e9, rel=0.01)


async def test_listening_mode_sends_nothing() -> None:
    sim = LineSimulator(options={"interval_s": "0.02"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    driver = LineDriver(cfg(port=listener.url), SystemClock())
    try:
        await driver.connect()
        readings = [r for _ in range(3) for r in await driver.read()]
    finally:
        await driver.close()
        await listener.close()
    assert driver.streaming
    assert sim.requests == []
    assert len(readings) == 3


@pytest.mark.fuzz
@given(st.text(max_size=30), st.booleans())
def test_display_figure_only_raises_protocol_error(text: str, exponent: bool) -> None:
    try:
        figure = display_figure(text, b"raw", exponent=exponent)
    except ProtocolError as exc:
        assert exc.raw == b"raw"
    else:
        assert figure == text.strip()
        assert float(figure) == float(figure)
        assert figure[0] in "+-0123456789"


@given(st.decimals(min_value=-1000, max_value=10**6, places=4, allow_nan=False, allow_infinity=False))
def test_display_figure_accepts_every_plain_decimal(value: Decimal) -> None:
    text = f"{value:f}"
    assert display_figure(f" {text} ", b"") == text


async def test_a_polled_line_instrument_is_staggered_like_every_polled_one(tmp_path: Path) -> None:
    from daq.daemon import Daemon
    from daq.journal import Journal
    from daq.journal.settings import JournalSection
    from drivers.base import Capability

    line = {
        "kind": "line",
        "pattern": PATTERN,
        "device_time_format": TIME_FORMAT,
        "period_s": 2.0,
        "timeout_s": 0.5,
    }
    config = make_config(
        tmp_path,
        [
            {**line, "name": "polled-a", "port": "socket://127.0.0.1:1", "poll_command": "RD"},
            {**line, "name": "listening", "port": "socket://127.0.0.1:2"},
            {**line, "name": "polled-b", "port": "socket://127.0.0.1:3", "poll_command": "RD"},
        ],
    )
    journal = await Journal.open(tmp_path, clock=SystemClock(), settings=JournalSection())
    try:
        supervisors = Daemon(config)._build_supervisors(journal)
    finally:
        await journal.close()
    capability = {s.name: s.driver.capability for s in supervisors}
    offsets = {s.name: s.offset_s for s in supervisors}
    assert capability == {
        "polled-a": Capability.POLLED,
        "listening": Capability.STREAMING,
        "polled-b": Capability.POLLED,
    }
    # The two polled instruments share the period; the listening one is not on a grid.
    assert offsets == {"polled-a": 0.0, "listening": 0.0, "polled-b": 1.0}


def test_the_drivers_reading_helper_puts_each_argument_in_its_field() -> None:
    # Driver.reading builds the reading positionally (for speed): every argument distinct, so a
    # swapped pair shows.
    driver = LineDriver(cfg(port="socket://127.0.0.1:9"), ManualClock(wall_ns=5_000_000_000, mono_ns=7))
    r = driver.reading(
        "activity", 2, "MBq", quality=Quality.UNCERTAIN, reason="stale", raw=b"A 2", device_ns=3,
        attrs={"nuclide": "F-18"}, acq_ns=11, mono_ns=13,
    )  # fmt: skip
    assert r == Reading(
        instrument=driver.name, channel="activity", value=2.0, unit="MBq", quality=Quality.UNCERTAIN,
        acq_ns=11, mono_ns=13, reason="stale", device_ns=3, raw=b"A 2", attrs={"nuclide": "F-18"},
    )  # fmt: skip
    stamped = driver.reading("activity", None, "MBq")
    assert (stamped.acq_ns, stamped.mono_ns, stamped.value, stamped.quality) == (
        5_000_000_000,
        7,
        None,
        Quality.GOOD,
    )
