"""Line protocol formatting: the spec's escaping rules, checked against examples from the
line-protocol reference and by round trip through a reference parser written from the spec."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.forward.lineprotocol import (
    LineFormatter,
    LineProtocolError,
    float_field,
    key,
    measurement,
    nuclide_of,
    string_field,
    tag_set,
)

# -- a reference parser, written from the spec (not from the formatter) ------------------------

_MEASUREMENT_ESCAPES = ", "
_KEY_ESCAPES = ",= "


def _read(line: str, i: int, stops: str, escapes: str) -> tuple[str, int]:
    out = []
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in escapes:
            out.append(line[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def _read_string(line: str, i: int) -> tuple[str, int]:
    assert line[i] == '"'
    i += 1
    out = []
    while line[i] != '"':
        if line[i] == "\\" and line[i + 1] in '"\\':
            out.append(line[i + 1])
            i += 2
            continue
        out.append(line[i])
        i += 1
    return "".join(out), i + 1


def parse(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """measurement, tags, fields, timestamp."""
    assert "\n" not in line
    name, i = _read(line, 0, ", ", _MEASUREMENT_ESCAPES)
    tags: dict[str, str] = {}
    while line[i] == ",":
        k, i = _read(line, i + 1, "=", _KEY_ESCAPES)
        v, i = _read(line, i + 1, ", ", _KEY_ESCAPES)
        tags[k] = v
    assert line[i] == " "
    i += 1
    fields: dict[str, Any] = {}
    while True:
        k, i = _read(line, i, "=", _KEY_ESCAPES)
        i += 1
        value: Any
        if line[i] == '"':
            value, i = _read_string(line, i)
        else:
            raw, i = _read(line, i, ", ", "")
            value = int(raw[:-1]) if raw.endswith("i") else float(raw)
        fields[k] = value
        if line[i] == " ":
            break
        assert line[i] == ","
        i += 1
    return name, tags, fields, int(line[i + 1 :])


# -- the spec's examples -----------------------------------------------------------------------


def test_escaping_examples_from_the_reference() -> None:
    # "Special characters" table of the InfluxDB line protocol reference.
    assert measurement("my Measurement") == "my\\ Measurement"
    assert measurement("wea,ther") == "wea\\,ther"
    assert key("tag Key1") == "tag\\ Key1"
    assert key("tag=Value") == "tag\\=Value"
    assert key("a,b") == "a\\,b"
    assert string_field('too hot "she said"') == '"too hot \\"she said\\""'
    assert string_field("C:\\path") == '"C:\\\\path"'
    # Equals signs need no escape in a measurement, nor quotes anywhere but string fields.
    assert measurement("a=b") == "a=b"
    assert key('a"b') == 'a"b'


def test_unwritable_input_raises() -> None:
    for bad in ("a\nb", "a\rb", "", "end\\", "a\\\\b", "a\\,b", "a\\ b", "a\\=b"):
        with pytest.raises(LineProtocolError):
            key(bad)
    with pytest.raises(LineProtocolError):
        measurement("#comment")
    with pytest.raises(LineProtocolError):
        string_field("two\nlines")
    assert key("a\\b") == "a\\b"  # a lone backslash before an ordinary character is kept


def test_floats() -> None:
    assert float_field(7400.0) == "7400.0"
    assert float_field(1e-05) == "1e-05"
    assert float_field(1.5e20) == "1.5e+20"
    assert float_field(-0.1) == "-0.1"
    assert float_field(math.nan) is None
    assert float_field(math.inf) is None
    assert float(float_field(0.1 + 0.2) or "") == 0.1 + 0.2  # shortest exact repr


def test_tag_set_sorted_and_empty_values_left_out() -> None:
    assert tag_set({"z": "1", "a": "x y", "m": None, "e": ""}) == ",a=x\\ y,z=1"


def test_nuclide_from_attrs() -> None:
    assert nuclide_of(None) is None
    assert nuclide_of('{"reported_value":"7.40","nuclide":"Lu-177"}') == "Lu-177"
    assert nuclide_of('{"nuclide":"Lu \\"177\\""}') == 'Lu "177"'
    assert nuclide_of('{"nuclide":""}') is None
    assert nuclide_of('{"other":1}') is None


# -- the formatter -------------------------------------------------------------------------------


def row(**kw: Any) -> tuple[Any, ...]:
    r = {
        "id": 1, "instrument": "dc1", "channel": "activity", "seq": 7, "acq_ns": 1_767_225_600_123_456_789,
        "value": 7.4e9, "unit": "Bq", "quality": 0, "reason": None, "attrs": '{"nuclide":"Lu-177"}',
        "run_id": None, **kw,
    }  # fmt: skip
    return tuple(r.values())


def formatter() -> LineFormatter:
    return LineFormatter(site="Site A", cell="cell,1", kinds={"dc1": "veenstra-vdc404"})


def test_a_reading_line() -> None:
    line = formatter().format(row(run_id="B-2026-001"))
    assert line == (
        "veenstra-vdc404,cell=cell\\,1,channel=activity,instrument=dc1,nuclide=Lu-177,run_id=B-2026-001,"
        'site=Site\\ A value=7400000000.0,quality=0i,seq=7i,unit="Bq" 1767225600123456789'
    )
    name, tags, fields, ts = parse(line)
    assert name == "veenstra-vdc404"
    assert tags["cell"] == "cell,1"
    assert fields == {"value": 7.4e9, "quality": 0, "seq": 7, "unit": "Bq"}
    assert ts == 1_767_225_600_123_456_789


def test_a_gap_has_no_value_and_carries_its_reason() -> None:
    line = formatter().format(row(value=None, quality=2, reason="disconnected", attrs=None))
    _, tags, fields, _ = parse(line)
    assert "nuclide" not in tags
    assert fields == {"quality": 2, "seq": 7, "unit": "Bq", "reason": "disconnected"}


def test_non_finite_value_is_left_out() -> None:
    _, _, fields, _ = parse(formatter().format(row(value=math.inf)))
    assert "value" not in fields


def test_unknown_instrument_gets_the_default_measurement() -> None:
    assert formatter().format(row(instrument="other")).startswith("daq,")


def test_same_series_same_timestamp_gets_a_dup_tag_and_formatting_is_deterministic() -> None:
    rows = [
        row(id=1, seq=1),
        row(id=2, seq=2),  # same channel, same acquisition time
        row(id=3, seq=3, channel="dose_rate"),  # another series: no collision
        row(id=4, seq=4),  # a third at the same time
        row(id=5, seq=5, acq_ns=1_767_225_600_123_456_790),
    ]
    f = formatter()
    lines = [f.format(r) for r in rows]
    dups = [parse(line)[1].get("dup") for line in lines]
    assert dups == [None, "1", None, "2", None]
    keys = {(parse(line)[1].get("channel"), parse(line)[1].get("dup"), parse(line)[3]) for line in lines}
    assert len(keys) == len(rows)  # no two points share series and timestamp
    # A forwarder restarted after row 2 replays rows 1-2 and formats the rest identically.
    g = formatter()
    g.observe_all(rows[:2])
    assert [g.format(r) for r in rows[2:]] == lines[2:]


# -- round trip ----------------------------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@given(channel=texts, nuclide=texts, run_id=texts, unit=texts, reason=texts)
def test_round_trip_or_a_clear_error(channel: str, nuclide: str, run_id: str, unit: str, reason: str) -> None:
    f = formatter()
    attrs = json.dumps({"nuclide": nuclide}, separators=(",", ":"))
    r = row(channel=channel, attrs=attrs, run_id=run_id, unit=unit, reason=reason)
    try:
        line = f.format(r)
    except LineProtocolError:
        return
    assert "\n" not in line
    _, tags, fields, ts = parse(line)
    assert tags.get("channel") == (channel or None)  # an empty tag value is left out
    assert tags.get("nuclide") == (nuclide or None)
    assert tags.get("run_id") == (run_id or None)
    assert fields["unit"] == unit
    assert fields.get("reason") == (reason or None)
    assert ts == r[4]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_round_trip(x: float) -> None:
    text = float_field(x)
    if text is None:
        assert not math.isfinite(x)
    else:
        assert float(text) == x


def test_collisions_at_the_servers_precision() -> None:
    # VictoriaMetrics keeps milliseconds: two readings 0.3 ms apart would be one sample there.
    f = LineFormatter(site="s", cell="c", kinds={}, resolution_ns=1_000_000)
    t = 1_767_225_600_000_100_000
    lines = [f.format(row(acq_ns=t)), f.format(row(acq_ns=t + 300_000)), f.format(row(acq_ns=t + 1_000_000))]
    assert [parse(line)[1].get("dup") for line in lines] == [None, "1", None]
    assert [parse(line)[3] for line in lines] == [t, t + 300_000, t + 1_000_000]  # exact times sent


# -- a batch at once: the per-series state never gives a stale prefix or unit ---------------------

batch_rows = st.lists(
    st.tuples(
        st.sampled_from(["dc1", "other"]),
        st.sampled_from(["activity", "dose_rate", "bad\nchannel"]),
        st.integers(0, 2),  # ms
        st.sampled_from([None, "R-1", "R-2"]),
        st.sampled_from([None, "F-18", "Lu-177"]),
        st.sampled_from(["Bq", "MBq"]),
        st.sampled_from([None, "stale"]),
    ),
    max_size=40,
)


@given(batch_rows)
def test_a_batch_formats_each_row_as_its_own_columns_say(cases: list[tuple[Any, ...]]) -> None:
    rows = [
        row(id=i + 1, seq=i, instrument=inst, channel=ch, acq_ns=1_767_225_600_000_000_000 + ms * 1_000_000,
            run_id=run, attrs=None if nuc is None else json.dumps({"nuclide": nuc}), unit=unit, reason=reason)
        for i, (inst, ch, ms, run, nuc, unit, reason) in enumerate(cases)
    ]  # fmt: skip
    f = LineFormatter(site="s", cell="c", kinds={"dc1": "calibrator"}, resolution_ns=1_000_000)
    lines, refused = f.format_many(rows)
    assert [rid for rid, _ in refused] == [r[0] for r in rows if "\n" in r[2]]
    assert all("newline" in str(exc) for _, exc in refused)
    last: dict[tuple[str, str], tuple[int, int]] = {}
    expected_dups = []
    for r in rows:
        prev = last.get((r[1], r[2]))
        dup = prev[1] + 1 if prev is not None and prev[0] == r[4] else 0
        last[(r[1], r[2])] = (r[4], dup)
        if "\n" not in r[2]:
            expected_dups.append(dup)
    sent = [r for r in rows if "\n" not in r[2]]
    assert len(lines) == len(sent)
    for line, r, dup in zip(lines, sent, expected_dups, strict=True):
        name, tags, fields, ts = parse(line)
        assert name == ("calibrator" if r[1] == "dc1" else "daq")
        assert (tags["instrument"], tags["channel"], ts) == (r[1], r[2], r[4])
        assert tags.get("run_id") == r[10]
        assert tags.get("nuclide") == (json.loads(r[9])["nuclide"] if r[9] else None)
        assert tags.get("dup") == (str(dup) if dup else None)
        assert (fields["unit"], fields.get("reason")) == (r[6], r[8])
    # One row at a time gives the same lines.
    g = LineFormatter(site="s", cell="c", kinds={"dc1": "calibrator"}, resolution_ns=1_000_000)
    one_by_one = []
    for r in rows:
        with contextlib.suppress(LineProtocolError):
            one_by_one.append(g.format(r))
    assert one_by_one == lines


def test_the_kind_of_an_unconfigured_instrument_is_asked_once() -> None:
    asked: list[str] = []

    def kind_of(instrument: str) -> str | None:
        asked.append(instrument)
        return "retired-kind" if instrument == "old" else None

    f = LineFormatter(site="s", cell="c", kinds={"dc1": "calibrator"}, kind_of=kind_of)
    lines, _ = f.format_many(
        [row(instrument="old"), row(instrument="old", channel="x"), row(instrument="gone"), row(id=2, seq=8)]
    )
    assert [parse(line)[0] for line in lines] == ["retired-kind", "retired-kind", "daq", "calibrator"]
    assert asked == ["old", "gone"]
