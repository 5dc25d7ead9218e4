"""Modbus decoding, request planning and register-map validation, without I/O.

Golden registers are worked out by hand from the IEEE 754 and two's complement encodings
and the word/byte orders of drivers/modbus/codec.py's table (the Modbus spec sends each
register high byte first: Modbus Application Protocol V1.1b3, section 4.2).
"""

from __future__ import annotations

import itertools
import math
import struct
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from daq.configfile.load import parse_config
from daq.errors import ConfigError, ProtocolError
from drivers.modbus import ModbusConfig, compile_plan
from drivers.modbus.codec import Span, ValueCodec, plan_requests, registers_to_bytes

ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]

# float32 pi = 0x40490FDB; int32 -123456789 = 0xF8A432EB; uint32 0x11223344.
GOLDEN_32 = [
    ("float32", "big", "big", [0x4049, 0x0FDB], 3.1415927410125732),
    ("float32", "little", "big", [0x0FDB, 0x4049], 3.1415927410125732),
    ("float32", "big", "little", [0x4940, 0xDB0F], 3.1415927410125732),
    ("float32", "little", "little", [0xDB0F, 0x4940], 3.1415927410125732),
    ("int32", "big", "big", [0xF8A4, 0x32EB], -123456789),
    ("int32", "little", "big", [0x32EB, 0xF8A4], -123456789),
    ("int32", "big", "little", [0xA4F8, 0xEB32], -123456789),
    ("int32", "little", "little", [0xEB32, 0xA4F8], -123456789),
    ("uint32", "big", "big", [0x1122, 0x3344], 0x11223344),
    ("uint32", "little", "big", [0x3344, 0x1122], 0x11223344),
    ("uint32", "big", "little", [0x2211, 0x4433], 0x11223344),
    ("uint32", "little", "little", [0x4433, 0x2211], 0x11223344),
]


@pytest.mark.parametrize(("kind", "word", "byte", "registers", "raw"), GOLDEN_32)
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.01, -40.0), (10.0, 273.15)])
def test_golden_32_bit_values_with_scale_and_offset(
    kind: str, word: str, byte: str, registers: list[int], raw: float, scale: float, offset: float
) -> None:
    codec = ValueCodec(kind, word, byte, scale, offset)
    assert codec.decode(registers_to_bytes(registers)) == pytest.approx(raw * scale + offset, rel=1e-12)
    assert codec.encode(raw * scale + offset) == registers


def test_golden_engineering_values() -> None:
    # A PT100 transmitter's int16 in 0.1 degC; a flow meter's uint32 in mL/h as mL/min.
    assert ValueCodec("int16", scale=0.1).decode(registers_to_bytes([0xFC18])) == pytest.approx(-100.0)
    assert ValueCodec("uint16", scale=0.1, offset=-50).decode(b"\x03\xe8") == pytest.approx(50.0)
    assert ValueCodec("uint16", byte_order="little").decode(b"\xe8\x03") == 1000.0
    flow = ValueCodec("uint32", "little", "big", scale=1 / 60)
    assert flow.decode(registers_to_bytes([0x0E10, 0x0000])) == pytest.approx(60.0)
    # float64 1.0 = 0x3FF0000000000000, low word first: [0, 0, 0, 0x3FF0].
    assert ValueCodec("float64").decode(registers_to_bytes([0x3FF0, 0, 0, 0])) == 1.0
    assert ValueCodec("float64", "little").decode(registers_to_bytes([0, 0, 0, 0x3FF0])) == 1.0
    assert ValueCodec("float64", "little", "little").decode(registers_to_bytes([0, 0, 0, 0xF03F])) == 1.0
    assert ValueCodec("bit", bit=3).decode(registers_to_bytes([0b1000])) == 1.0
    assert ValueCodec("bit", bit=2).decode(registers_to_bytes([0b1000])) == 0.0
    assert ValueCodec("bit", bit=15).decode(registers_to_bytes([0x8000])) == 1.0
    assert ValueCodec("bool").decode(registers_to_bytes([7])) == 1.0
    assert ValueCodec("bool").decode(registers_to_bytes([0])) == 0.0
    # The start offset addresses the value inside a coalesced response.
    data = registers_to_bytes([0xAAAA, 0x4049, 0x0FDB])
    assert ValueCodec("float32").decode(data, 2) == pytest.approx(math.pi, rel=1e-7)


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_nan_and_infinity_are_protocol_errors_with_the_bytes(registers: list[int]) -> None:
    with pytest.raises(ProtocolError) as info:
        ValueCodec("float32").decode(registers_to_bytes(registers))
    assert info.value.raw == registers_to_bytes(registers)


def test_short_data_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ValueCodec("float64").decode(b"\x00" * 6)
    with pytest.raises(ProtocolError):
        ValueCodec("float32").decode(registers_to_bytes([1, 2]), 2)


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ValueCodec("uint16").encode(70000)
    with pytest.raises(ValueError, match="does not fit"):
        ValueCodec("int16", scale=0.1).encode(4000)
    with pytest.raises(ValueError, match="not finite"):
        ValueCodec("float32").encode(math.nan)
    with pytest.raises(ValueError):
        ValueCodec("bit", bit=1).encode(1)


TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit"]


@pytest.mark.fuzz
@given(
    st.binary(max_size=20),
    st.integers(0, 12),
    st.sampled_from(TYPES),
    st.sampled_from(ORDERS),
)
def test_arbitrary_bytes_only_raise_protocol_error(
    data: bytes, start: int, kind: str, order: tuple[str, str]
) -> None:
    codec = ValueCodec(kind, *order, scale=0.5, offset=1.0, bit=5 if kind == "bit" else None)
    try:
        value = codec.decode(data, start)
    except ProtocolError:
        return
    assert math.isfinite(value)
    if kind in ("bool", "bit"):
        assert value in (0.0, 1.0)


@given(
    st.sampled_from(["int16", "uint16", "int32", "uint32"]),
    st.sampled_from(ORDERS),
    st.integers(-(2**31), 2**32 - 1),
)
def test_integers_round_trip_in_every_order(kind: str, order: tuple[str, str], raw: int) -> None:
    codec = ValueCodec(kind, *order)
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}[kind]
    try:
        struct.pack(fmt, raw)
    except struct.error:
        with pytest.raises(ValueError):
            codec.encode(raw)
        return
    assert codec.decode(registers_to_bytes(codec.encode(raw))) == raw


@given(st.sampled_from(ORDERS), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_round_trips_in_every_order(order: tuple[str, str], value: float) -> None:
    codec = ValueCodec("float32", *order)
    assert codec.decode(registers_to_bytes(codec.encode(value))) == value


# -- request planning -------------------------------------------------------------------


def test_contiguous_values_share_a_request_and_holes_split() -> None:
    spans = [Span(0, 0, 2), Span(1, 2, 2), Span(2, 4, 1), Span(3, 10, 2)]
    reqs = plan_requests(spans, 125)
    assert [(r.address, r.count, r.keys) for r in reqs] == [(0, 5, (0, 1, 2)), (10, 2, (3,))]
    # With a tolerated hole of 5 addresses they become one read.
    assert [(r.address, r.count) for r in plan_requests(spans, 125, max_gap=5)] == [(0, 12)]


def test_limits_split_without_cutting_a_value() -> None:
    # 70 float32 in a row: 140 registers, more than one read of 125 can take.
    reqs = plan_requests([Span(i, 2 * i, 2) for i in range(70)], 125)
    assert [(r.address, r.count) for r in reqs] == [(0, 124), (124, 16)]
    bits = plan_requests([Span(i, i, 1) for i in range(2500)], 2000)
    assert [(r.address, r.count) for r in bits] == [(0, 2000), (2000, 500)]


@given(
    st.lists(st.tuples(st.integers(0, 400), st.sampled_from([1, 2, 4])), min_size=1, max_size=60),
    st.integers(4, 125),
    st.integers(0, 3),
)
def test_plan_covers_every_span_within_the_limit(spans: list[tuple[int, int]], limit: int, gap: int) -> None:
    items = [Span(i, a, n) for i, (a, n) in enumerate(spans)]
    reqs = plan_requests(items, limit, gap)
    seen = sorted(k for r in reqs for k in r.keys)
    assert seen == list(range(len(items)))
    for r in reqs:
        assert 1 <= r.count <= limit
        for k in r.keys:
            s = items[k]
            assert r.address <= s.address
            assert s.address + s.count <= r.address + r.count
    # Fewest requests: a request ends only where the next span could not have joined it.
    for a, b in itertools.pairwise(reqs):
        first_of_b = min(items[k].address for k in b.keys)
        last_end = max(items[k].address + items[k].count for k in b.keys if items[k].address == first_of_b)
        joined_end = max(a.address + a.count, last_end)
        assert first_of_b > a.address + a.count + gap or joined_end - a.address > limit


# -- register maps in config ------------------------------------------------------------

MAP = Path(__file__).resolve().parents[1] / "config" / "synth-modbus-map.toml"


def _config(**extra: object) -> ModbusConfig:
    base: dict[str, object] = {"name": "s", "kind": "modbus", "port": "tcp://127.0.0.1:502"}
    return ModbusConfig.model_validate({**base, **extra})


def test_shipped_map_loads_and_plans_six_requests() -> None:
    cfg = _config(map_file=str(MAP))
    assert len(cfg.all_channels) == 28
    plan = compile_plan(cfg)
    assert [(r.table, r.address, r.count) for u in plan for r in u.reads] == [
        ("coil", 0, 8), ("coil", 100, 1), ("discrete", 0, 1), ("discrete", 3, 1),
        ("holding", 0, 12), ("input", 0, 18),
    ]  # fmt: skip


def test_map_file_is_resolved_next_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "m.toml").write_text(MAP.read_text())
    cfg_file = tmp_path / "daq.toml"
    text = f"""
[daemon]
data_dir = "{tmp_path}"
[[instruments]]
name = "synth"
kind = "modbus"
port = "tcp://127.0.0.1:5020"
map_file = "maps/m.toml"
[[instruments.channels]]
name = "extra"
table = "input"
address = 300
"""
    cfg_file.write_text(text)
    config = parse_config(text, path=str(cfg_file))
    inst = config.instruments[0]
    assert isinstance(inst, ModbusConfig)
    assert inst.map_file == str(tmp_path / "maps" / "m.toml")
    assert [c.name for c in inst.all_channels][-1] == "extra"
    assert len(inst.all_channels) == 29


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"table": "coil", "address": 0, "type": "float32"}, "type must be bool"),
        ({"table": "holding", "address": 0, "type": "bit"}, "bit is required"),
        ({"table": "holding", "address": 0, "bit": 3}, "bit is required"),
        ({"table": "input", "address": 0, "writable": True}, "only holding registers and coils"),
        ({"table": "holding", "address": 65535, "type": "float32"}, "runs past 65535"),
        ({"table": "holding", "address": 0, "scale": 0}, "non-zero"),
        ({"table": "holding", "address": 0, "enum": {"x": "y"}}, "not an integer"),
        ({"table": "registers", "address": 0}, "holding"),
    ],
)
def test_bad_channels_are_config_errors_naming_the_key(channel: dict[str, object], message: str) -> None:
    instrument = {
        "name": "s",
        "kind": "modbus",
        "port": "tcp://127.0.0.1:502",
        "channels": [{"name": "c", **channel}],
    }
    text = tomli_w.dumps({"instruments": [instrument]})
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="site.toml")
    assert info.value.file == "site.toml"
    assert info.value.key_path is not None
    assert info.value.key_path.startswith("instruments[0].channels[0]")
    assert message in str(info.value)


def test_map_file_errors_name_the_map_file_and_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad-map.toml"
    bad.write_text('[[channels]]\nname = "t"\ntable = "input"\naddress = 0\ntype = "float33"\n')
    with pytest.raises(ConfigError) as info:
        parse_config(
            '[[instruments]]\nname = "s"\nkind = "modbus"\nport = "tcp://127.0.0.1:502"\nmap_file = "bad-map.toml"\n',
            path=str(tmp_path / "site.toml"),
        )
    text = str(info.value)
    assert "bad-map.toml" in text
    assert "channels[0].type" in text
    with pytest.raises(ConfigError, match="no such file"):
        parse_config(
            '[[instruments]]\nname = "s"\nkind = "modbus"\nport = "tcp://127.0.0.1:502"\nmap_file = "nope.toml"\n',
            path=str(tmp_path / "site.toml"),
        )


def test_duplicate_channels_and_bad_ports_are_refused() -> None:
    ch = {"name": "a", "table": "input", "address": 0}
    with pytest.raises(ValueError, match="duplicate channel name"):
        _config(channels=[ch, ch])
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        _config(port="tcp://nohost", channels=[ch])
    with pytest.raises(ValueError, match="request_timeout_s"):
        _config(channels=[ch], request_timeout_s=1.0)


def test_rtu_bus_has_one_owner_tcp_does_not() -> None:
    ch = {"name": "a", "table": "input", "address": 0}
    assert _config(channels=[ch]).bus() is None
    assert _config(port="/dev/ttyUSB0", channels=[ch]).bus() == "/dev/ttyUSB0"


def test_map_file_of_channel_tables_or_of_one_modbus_instrument(tmp_path: Path) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text('description = "two values"\n[[channels]]\nname = "a"\ntable = "input"\naddress = 0\n'
                     '[[channels]]\nname = "b"\ntable = "coil"\naddress = 4\n')  # fmt: skip
    assert [c.name for c in _config(map_file=str(plain)).all_channels] == ["a", "b"]
    assert len(_config(map_file=str(MAP)).all_channels) == 28
    two = tmp_path / "two.toml"
    two.write_text(
        MAP.read_text() + MAP.read_text().split("[daemon]")[1].split('data_dir = "synth-modbus-data"')[1]
    )
    with pytest.raises(ValueError, match="exactly one modbus instrument"):
        _config(map_file=str(two))
    odd = tmp_path / "odd.toml"
    odd.write_text('[[channel]]\nname = "a"\n')
    with pytest.raises(ValueError, match="unknown top-level key 'channel'"):
        _config(map_file=str(odd))


def test_map_channels_are_loaded_not_written(tmp_path: Path) -> None:
    cfg = _config(map_file=str(MAP), channels=[{"name": "extra", "table": "input", "address": 300}])
    dumped = cfg.model_dump(mode="json", exclude_none=True)
    assert "map_channels" not in dumped
    assert [c["name"] for c in dumped["channels"]] == ["extra"]
    assert len(ModbusConfig.model_validate(dumped).all_channels) == 29  # a dump loads back the same
    with pytest.raises(ValueError, match="map_channels is not a config key"):
        _config(map_channels=[{"name": "a", "table": "input", "address": 0}])
    with pytest.raises(ValueError, match="no channels"):
        _config()
    with pytest.raises(ValueError, match="duplicate channel name 'reactor_temp'"):
        _config(map_file=str(MAP), channels=[{"name": "reactor_temp", "table": "input", "address": 0}])
