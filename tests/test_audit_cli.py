"""``daq audit``: the whole trail, a run's entries (including a later re-integration), ``--since``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daq.cli import main as cli
from daq.cli.audit import parse_since
from daq.errors import DaqError
from tests.runs_helpers import TLC, record_run


def test_parse_since() -> None:
    assert parse_since("2026-01-01T00:00:00Z") == 1_767_225_600_000_000_000
    assert parse_since("2026-01-01T01:00:00+01:00") == 1_767_225_600_000_000_000
    assert parse_since("2026-01-01T00:00:00.000250+00:00") == 1_767_225_600_000_250_000
    assert parse_since("90m", now_ns=10_000 * 10**9) == (10_000 - 5400) * 10**9
    assert parse_since("2d", now_ns=200_000 * 10**9) == (200_000 - 172_800) * 10**9
    with pytest.raises(DaqError, match="no UTC offset"):
        parse_since("2026-01-01T00:00:00")
    with pytest.raises(DaqError, match="expected an ISO 8601 time"):
        parse_since("yesterday")


async def test_audit_cli(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = await record_run(data_dir, readings=5)
    capsys.readouterr()
    assert cli(["audit", "--data-dir", str(data_dir), "--run", rec.run_id]) == 0
    out = capsys.readouterr().out
    for action in ("run_start", "annotation", "t0", "run_stop", "run_sealed"):
        assert action in out
    assert rec.annotation in out
    assert "+00:00" in out
    assert "daemon_start" not in out  # not part of the run
    if TLC:
        # Made after the run closed, the re-integration still belongs to the run's trail.
        assert "tlc_reintegrate" in out
        assert "carol" in out
    assert cli(["audit", "--data-dir", str(data_dir), "--since", "1h", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    actions = [x["action"] for x in lines]
    assert {"daemon_start", "config_diff", "clock_sync", "run_start", "daemon_stop"} <= set(actions)
    assert actions.index("daemon_start") < actions.index("run_start") < actions.index("daemon_stop")
    assert all(x["ts"].endswith("+00:00") for x in lines)
    assert cli(["audit", "--data-dir", str(data_dir), "--since", "2001-01-01T00:00:00"]) == 1
    assert "no UTC offset" in capsys.readouterr().err
    assert cli(["audit", "--data-dir", str(data_dir), "--since", "2099-01-01T00:00:00+01:00"]) == 0
    assert "0 audit entries" in capsys.readouterr().out
    assert cli(["audit", "--data-dir", str(data_dir), "--run", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_parse_since_accepts_or_refuses_any_text() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.text(max_size=40))
    def check(text: str) -> None:
        try:
            value = parse_since(text, now_ns=10**18)
        except DaqError:
            return
        assert isinstance(value, int)

    check()
