"""Property: whatever a record holds, the journal stores its canonical form bit for bit.

Arbitrary readings, events, audit entries and run annotations (any text, lone surrogates
included; any float, ``-0.0``, NaN and infinities included; any integer; timestamps far
outside 1970..2200) go through the real journal writer, then ``daq verify``, ``daq export``
plus ``daq verify --export``, and the line-protocol formatter. The writer never stops and
never refuses one of them, verification passes, and each row read back is exactly what
:mod:`daq.canonical` defines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq import canonical
from daq.cli import main as cli
from daq.clock import ManualClock
from daq.forward.lineprotocol import ROW_SELECT, LineFormatter, LineProtocolError
from daq.journal import Journal
from daq.journal.journal import JOURNAL_FILE, dumps
from daq.model import InstrumentEvent, Quality, Reading

NOW = 1_767_225_600_000_000_000
MONO = 5_000_000_000
RUN_ID = "R-1"
OPCUA_NULL_NS = -11_644_473_600_000_000_000

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.lists(st.one_of(st.characters(), surrogates), max_size=12).map("".join)
ints = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30]),
)
floats = st.one_of(
    st.floats(), st.sampled_from([-0.0, float("nan"), float("inf"), float("-inf"), 1e308, 5e-324])
)
timestamps = st.one_of(
    st.integers(0, canonical.MAX_TS_NS + 10**18),
    ints,
    st.sampled_from([OPCUA_NULL_NS, -1, 0, canonical.MAX_TS_NS - 1, canonical.MAX_TS_NS]),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)
attrs = st.one_of(
    st.none(),
    st.dictionaries(
        st.one_of(texts, st.sampled_from(["source_ns", "server_ns", "nuclide", "canonical"])),
        st.one_of(json_values, timestamps),
        max_size=4,
    ),
)
raws = st.one_of(st.none(), st.binary(max_size=16))

readings = st.builds(
    Reading,
    instrument=texts,
    channel=texts,
    value=st.one_of(st.none(), floats, ints),
    unit=texts,
    quality=st.sampled_from(list(Quality)),
    acq_ns=timestamps,
    mono_ns=ints,
    reason=st.one_of(st.none(), texts),
    device_ns=st.one_of(st.none(), timestamps),
    raw=raws,
    attrs=attrs,
    run_id=st.just(RUN_ID),
)
events = st.builds(
    InstrumentEvent, instrument=texts, kind=texts, ts_ns=timestamps, mono_ns=ints, detail=attrs, raw=raws
)
audits = st.tuples(texts, texts, st.one_of(st.none(), texts), attrs)
annotation_args = st.tuples(texts, texts, texts)


async def journal_all(
    data_dir: Path,
    rs: list[Reading],
    es: list[InstrumentEvent],
    aus: list[tuple[str, str, str | None, dict[str, Any] | None]],
    notes: list[tuple[str, str, str]],
) -> None:
    journal = await Journal.open(data_dir, clock=ManualClock(wall_ns=NOW, mono_ns=MONO))
    try:
        journal.record(
            "run_events",
            {"run_id": RUN_ID, "kind": "start", "ts_ns": NOW, "mono_ns": MONO, "actor": "op", "reason": None,
             "instrument": None, "detail": dumps({"batch": "B-1", "product": "P", "nuclide": "F-18"})},
        )  # fmt: skip
        for r in rs:
            assert journal.append(r)
        for e in es:
            journal.event(e)
        for action, actor, subject, detail in aus:
            journal.audit(action, actor=actor, subject=subject, detail=detail)
        for text, actor, reason in notes:
            # As the run manager annotates: a run event and an audit entry.
            journal.record(
                "run_events",
                {"run_id": RUN_ID, "kind": "annotation", "ts_ns": NOW, "mono_ns": MONO, "actor": actor,
                 "reason": reason, "instrument": None, "detail": dumps({"text": text})},
            )  # fmt: skip
            journal.audit("annotation", actor=actor, subject=RUN_ID, detail={"text": text, "reason": reason})
        async with asyncio.timeout(10):
            await journal.flush()
        assert journal.rejected == 0
        assert journal.writer_errors == 0
        assert journal.writer_running
    finally:
        await journal.close()


def expected_readings(rs: list[Reading]) -> list[tuple[Any, ...]]:
    """The rows of ``rs`` journaled in a new journal: canonical, each the next sequence number
    of its instrument (as named once canonical)."""
    seqs: dict[str, int] = {}
    return [expected_reading(r, seqs) for r in rs]


def expected_reading(r: Reading, seqs: dict[str, int]) -> tuple[Any, ...]:
    c = canonical.reading(r, now_ns=NOW, now_mono_ns=MONO)
    seq = seqs[c.instrument] = seqs.get(c.instrument, 0) + 1
    attrs = None if not c.attrs else json.dumps(c.attrs, sort_keys=True, separators=(",", ":"))
    return (c.instrument, c.channel, seq, c.acq_ns, c.mono_ns, c.device_ns, c.value, c.unit,
            int(c.quality), c.reason, c.raw, attrs, c.run_id)  # fmt: skip


def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # Bit for bit: floats compared by repr (so 0.0 and -0.0 differ).
    return [repr(x) for x in a] == [repr(x) for x in b]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    rs=st.lists(readings, max_size=6),
    es=st.lists(events, max_size=3),
    aus=st.lists(audits, max_size=3),
    notes=st.lists(annotation_args, max_size=2),
)
@pytest.mark.slow
def test_any_record_is_journaled_canonically_and_verifies(
    rs: list[Reading],
    es: list[InstrumentEvent],
    aus: list[tuple[str, str, str | None, dict[str, Any] | None]],
    notes: list[tuple[str, str, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        asyncio.run(journal_all(data_dir, rs, es, aus, notes))
        conn = sqlite3.connect(data_dir / JOURNAL_FILE)
        try:
            stored = conn.execute(
                "SELECT instrument, channel, seq, acq_ns, mono_ns, device_ns, value, unit, quality, reason, "
                "raw, attrs, run_id FROM readings ORDER BY id"
            ).fetchall()
            stored_events = conn.execute(
                "SELECT instrument, kind, ts_ns, mono_ns, detail, raw FROM events"
            ).fetchall()
            stored_audit = conn.execute(
                "SELECT actor, action, subject, detail FROM audit ORDER BY id"
            ).fetchall()
            stored_notes = conn.execute(
                "SELECT actor, reason, detail FROM run_events WHERE kind = 'annotation' ORDER BY id"
            ).fetchall()
            lines = conn.execute(ROW_SELECT + " ORDER BY id").fetchall()
        finally:
            conn.close()

        assert len(stored) == len(rs)
        for r, row, expected in zip(rs, stored, expected_readings(rs), strict=True):
            assert same(tuple(row), expected), (r, row)
        assert len(stored_events) == len(es)
        for e, erow in zip(es, stored_events, strict=True):
            c = canonical.event(e, now_ns=NOW, now_mono_ns=MONO)
            detail = None if not c.detail else json.dumps(c.detail, sort_keys=True, separators=(",", ":"))
            assert same(tuple(erow), (c.instrument, c.kind, c.ts_ns, c.mono_ns, detail, c.raw))
        texts_in = [canonical.text(a[1]) for a in aus] + [canonical.text(n[1]) for n in notes]
        assert [a[0] for a in stored_audit] == texts_in
        for (text, actor, reason), (s_actor, s_reason, s_detail) in zip(notes, stored_notes, strict=True):
            assert (s_actor, s_reason) == (canonical.text(actor), canonical.text(reason))
            assert json.loads(s_detail)["text"] == canonical.text(text)
        for row in (*stored, *stored_events, *stored_audit, *stored_notes):
            for value in row:
                if isinstance(value, str):
                    value.encode("utf-8")  # valid UTF-8: raises otherwise

        assert cli(["verify", "--data-dir", str(data_dir)]) == 0
        for fmt in ("csv", "json"):
            out = Path(tmp) / f"export-{fmt}"
            assert (
                cli(["export", RUN_ID, "--data-dir", str(data_dir), "--out", str(out), "--format", fmt]) == 0
            )
            assert cli(["verify", "--export", str(out), "--data-dir", str(data_dir)]) == 0

        formatter = LineFormatter(site="site", cell="cell", kinds={})
        for row in lines:
            try:
                line = formatter.format(row)
            except LineProtocolError:
                continue
            assert "\n" not in line
            line.encode("utf-8")


@settings(max_examples=300)
@given(r=readings)
def test_the_fast_check_agrees_with_the_rules(r: Reading) -> None:
    # reading() returns a reading unchanged when is_canonical_reading() says so: the full
    # rules must then change nothing (the check may be conservative: nested attrs go the
    # full way). And the rules are idempotent.
    full = canonical._reading(r, now_ns=NOW, now_mono_ns=MONO)
    assert repr(canonical._reading(full, now_ns=NOW, now_mono_ns=MONO)) == repr(full)
    if canonical.is_canonical_reading(r):
        assert repr(full) == repr(r)


@pytest.mark.parametrize("value", [-0.0, 0.0, 1e308, -1e-308, 5e-324])
def test_finite_values_keep_their_bits_except_the_sign_of_zero(value: float) -> None:
    r = Reading("dc1", "activity", value, "Bq", Quality.GOOD, NOW, MONO)
    c = canonical.reading(r, now_ns=NOW, now_mono_ns=MONO)
    assert repr(c.value) == repr(value + 0.0)
    assert c.attrs is None  # nothing to note


@settings(max_examples=200)
@given(r=readings)
def test_a_reading_is_checked_once_and_a_changed_copy_is_checked_again(r: Reading) -> None:
    out = canonical.reading(r, now_ns=NOW, now_mono_ns=MONO)
    assert out.canonical_checked  # the writer will not check it again
    assert canonical.checked(out)
    assert canonical.reading(out, now_ns=NOW, now_mono_ns=MONO) is out
    # A copy with a field changed is not vouched for, whatever the change.
    changed = dataclasses.replace(out, value=math.nan)
    assert not changed.canonical_checked
    fixed = canonical.reading(changed, now_ns=NOW, now_mono_ns=MONO)
    assert fixed.value is None
    assert fixed.quality is Quality.BAD
    # The runs stage's copies stay vouched for only with canonical values.
    assert out.with_run_id("R-1").canonical_checked
    assert not out.with_run_id("R-\udc80").canonical_checked
    assert out.with_run_id("R-\udc80") == dataclasses.replace(out, run_id="R-\udc80")
