"""The reading model's own helpers."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from daq.model import Quality, Reading


def test_with_run_id_equals_replace_and_keeps_every_field() -> None:
    # Every field set to a value other than its default, so a field the constructor call
    # forgets (or one added to Reading later) shows as a difference.
    r = Reading(
        instrument="dc1", channel="activity", value=1.5, unit="MBq", quality=Quality.UNCERTAIN,
        acq_ns=1_700_000_000_000_000_000, mono_ns=42, reason="stale", device_ns=1_700_000_000_000_000_001,
        raw=b"\x01A", attrs={"nuclide": "F-18"}, run_id="R-1",
    )  # fmt: skip
    defaults = {f.name: f.default for f in dataclasses.fields(Reading) if f.init}
    assert all(getattr(r, name) != default for name, default in defaults.items())
    got = r.with_run_id("R-2")
    assert got == dataclasses.replace(r, run_id="R-2")
    assert got.run_id == "R-2"
    assert r.run_id == "R-1"  # a new reading; the original is unchanged
    assert all(
        getattr(got, f.name) is getattr(r, f.name)
        for f in dataclasses.fields(Reading)
        if f.name not in ("run_id", "canonical_checked")
    )


def test_the_written_out_constructor_matches_the_fields() -> None:
    import inspect

    params = list(inspect.signature(Reading.__init__).parameters.values())[1:]
    fields = [f for f in dataclasses.fields(Reading) if f.init]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == expected, p.name
    r = Reading("dc1", "activity", 1.0, "MBq", Quality.GOOD, 1, 2)
    assert [getattr(r, f.name) for f in fields] == ["dc1", "activity", 1.0, "MBq", Quality.GOOD, 1, 2,
                                                     None, None, None, None, None]  # fmt: skip
    try:
        r.value = 2.0  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a reading must stay frozen")
    assert dataclasses.replace(r, run_id="R-2") == r.with_run_id("R-2")
    full = Reading("dc1", "a", 1.5, "MBq", Quality.UNCERTAIN, 1, 2, "stale", 3, b"x", {"k": 1}, "R-1")
    assert full.with_run_id(None) == dataclasses.replace(full, run_id=None)


def test_a_new_reading_is_a_reading_and_cannot_be_subclassed() -> None:
    r = Reading("dc1", "activity", 1.0, "MBq", Quality.GOOD, 1, 2, attrs={"nuclide": "F-18"})
    # Filled as another class with the same slots; it must be a Reading again, and frozen.
    assert type(r) is Reading
    assert r.canonical_checked is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.unit = "mCi"  # type: ignore[misc]
    assert copy.copy(r) == r
    assert pickle.loads(pickle.dumps(r)) == r
    with pytest.raises(TypeError, match="final"):

        class Sub(Reading):  # the class statement is what raises
            pass
