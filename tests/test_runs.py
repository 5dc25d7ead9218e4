"""Runs through the daemon: start/stop/annotate/t0, the run id on readings, sealing, the
trigger from a real synthesizer simulator (Modbus TCP), recovery, config diffs, the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from daq.cli import main as cli
from daq.cli import simulate
from daq.configfile.load import load_config, parse_config
from daq.daemon import Daemon
from daq.errors import ConfigError, DaqError
from daq.journal import Journal, JournalReader, verify_journal
from daq.journal.journal import dumps
from daq.journal.lock import take_lock
from daq.runs import store
from daq.runs.export import verify_export, write_export
from daq.runs.fields import RunError
from daq.runs.seal import seal_from_journal
from simulators.synth_modbus import SynthModbusSimulator
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.runs_helpers import record_run, vdc_config


async def test_run_lifecycle_stamps_readings_and_seals(data_dir: Path) -> None:
    rec = await record_run(data_dir)
    with JournalReader(data_dir) as r:
        rows = r.readings(limit=100_000)
        audit = r.audit()
        run = store.get_run(r.conn, rec.run_id)
        in_run = [x for x in rows if x["run_id"] == rec.run_id]
        assert seal_from_journal(r.conn, run, run["seal_through"]) == run["seal"]
    # Readings before and after the run carry no id; those during it carry the run's.
    assert len(in_run) >= 25
    ids = [x["id"] for x in in_run]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # one contiguous stretch
    assert rows[0]["run_id"] is None
    assert rows[-1]["run_id"] is None
    assert run["batch"] == "LOT 42/A"
    assert run["nuclide"] == "F-18"
    assert run["operator"] == "alice"
    assert run["instruments"]["dc1"]["device"]["model"] == "Veenstra VDC-404"
    assert run["config_sha256"]
    assert run["seal"] == rec.run["seal"]
    assert run["annotations"][0]["text"] == rec.annotation
    assert run["annotations"][0]["reason"] == "shield cracked"
    assert run["t0"][0]["instrument"] == "dc1"
    # t0 went to the equilibrium gate, with the run.
    assert rec.t0_calls == [(run["t0"][0]["ts_ns"], "dc1", rec.run_id)]
    actions = [a["action"] for a in audit if a["run_id"] == rec.run_id]
    for action in ("run_start", "annotation", "t0", "run_stop", "run_sealed"):
        assert action in actions
    sealed = next(a for a in audit if a["action"] == "run_sealed")
    assert sealed["detail"]["seal"] == run["seal"]
    assert next(a for a in audit if a["action"] == "annotation")["actor"] == "bob"
    assert "config_diff" in [a["action"] for a in audit]
    assert verify_journal(data_dir).ok


async def test_refusals_are_clear(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        with pytest.raises(RunError, match="no run is open"):
            await runs.close_run(actor="alice")
        with pytest.raises(RunError, match="no run is open"):
            await runs.annotate(text="x", actor="a", reason="r")
        with pytest.raises(DaqError, match="unknown nuclide"):
            await runs.open_run(batch="B", product="P", nuclide="Xx-999", operator="o", actor="a")
        with pytest.raises(RunError, match="batch must not be empty"):
            await runs.open_run(batch=" ", product="P", nuclide="Lu-177", operator="o", actor="a")
        await runs.open_run(batch="B", product="P", nuclide="Lu-177", operator="o", actor="a")
        with pytest.raises(RunError, match="is open; stop it first"):
            await runs.open_run(batch="C", product="P", nuclide="Lu-177", operator="o", actor="a")
        with pytest.raises(RunError, match="no instrument named"):
            await runs.annotate(text="x", actor="a", reason="r", instrument="nope")
        # The data directory is held while the daemon runs (retention cannot prune under it).
        with pytest.raises(DaqError, match="a daemon is running"):
            take_lock(data_dir)
        assert runs.active()["batch"] == "B"
        assert runs.status()["active"]["batch"] == "B"
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    # A clean stop seals the open run.
    with JournalReader(data_dir) as r:
        (run,) = store.list_runs(r.conn)
    assert run["ended_by"] == "daemon"
    assert run["stop_reason"] == "daemon stopping"
    assert run["seal"]


def test_trigger_instrument_must_exist(data_dir: Path) -> None:
    # Refused when the config is loaded (check-config), not only when the daemon starts.
    with pytest.raises(ConfigError, match=r"runs.trigger_instrument.*no instrument named 'synth'"):
        vdc_config(
            data_dir, "socket://127.0.0.1:9", '[runs]\ntrigger_instrument = "synth"\ntrigger_channel = "x"\n'
        )
    with pytest.raises(ConfigError, match="must be given together"):
        vdc_config(data_dir, "socket://127.0.0.1:9", '[runs]\ntrigger_channel = "x"\n')


def synth_config(data_dir: Path, port: int) -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"

[journal]
commit_window_s = 0.02

[runs]
trigger_instrument = "synth"
trigger_channel = "sequence_running"
batch_prefix = "LU"
product = "[177Lu]Lu-PSMA-617"
nuclide = "Lu-177"
operator = "line-1"

[clock]
check_every_s = 0.05

[[instruments]]
name = "synth"
kind = "modbus"
port = "tcp://127.0.0.1:{port}"
period_s = 0.05
timeout_s = 0.04
backoff_initial_s = 0.1
backoff_cap_s = 0.5

[[instruments.channels]]
name = "sequence_running"
table = "discrete"
address = 0

[[instruments.channels]]
name = "step_number"
table = "holding"
address = 0
enum = {{ "0" = "idle", "3" = "heat", "4" = "hold" }}

[[instruments.channels]]
name = "reactor_temp"
table = "input"
address = 0
type = "float32"
unit = "degC"
"""


async def test_synthesizer_starts_and_stops_a_run_and_its_export_verifies(
    data_dir: Path, tmp_path: Path
) -> None:
    # 1590 s of synthesis at 400x is about 4 s; the idle phase 80 s at 400x is 0.2 s.
    sim = SynthModbusSimulator(options={"time_scale": "400", "idle_s": "80", "update_s": "0.02"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    port = int(listener.url.rsplit(":", 1)[1])
    cfg = parse_config(synth_config(data_dir, port), path="synth.toml")
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        await wait_until(lambda: runs.runs_sealed >= 1, timeout=30)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        sealed = [x for x in store.list_runs(r.conn) if x["started_by"] == "trigger:synth/sequence_running"]
        run = sealed[0]
        rows = r.readings(limit=1_000_000)
    assert run["batch"].startswith("LU-")
    assert run["nuclide"] == "Lu-177"
    assert run["seal"]
    assert run["ended_by"] == "trigger:synth/sequence_running"
    flag = [x for x in rows if x["channel"] == "sequence_running" and x["quality"] == 0]
    in_run = [x for x in flag if x["run_id"] == run["run_id"]]
    # The rising reading opens the run; every flag reading inside it is 1; the falling one is outside.
    assert in_run
    assert all(x["value"] == 1.0 for x in in_run)
    after = [x for x in flag if x["id"] > in_run[-1]["id"]]
    assert after
    assert after[0]["value"] == 0.0
    assert after[0]["run_id"] is None
    # Gap records (a missed poll slot, a timeout) carry no value.
    temps = [
        x
        for x in rows
        if x["channel"] == "reactor_temp" and x["run_id"] == run["run_id"] and x["value"] is not None
    ]
    assert max(x["value"] for x in temps) > 80  # the heating step happened inside the run
    out = tmp_path / "export"
    write_export(data_dir, run["run_id"], out, "csv")
    assert verify_export(out, data_dir=data_dir).ok
    assert cli(["verify", "--export", str(out)]) == 0
    # One changed byte in any file fails verification, naming that file.
    for path in sorted(out.iterdir()):
        copy = tmp_path / f"copy-{path.name}"
        copy.mkdir()
        for f in out.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        data = bytearray((copy / path.name).read_bytes())
        i = len(data) // 2
        data[i] = ord("7") if data[i] != ord("7") else ord("8")
        (copy / path.name).write_bytes(bytes(data))
        result = verify_export(copy)
        assert (result.ok, result.file) == (False, path.name), result


async def test_demo_synthesizer_starts_and_stops_a_run(tmp_path: Path) -> None:
    """The demo cell's own config (``[runs]`` trigger, the Modbus synthesizer and its register
    map) with the demo's simulator, run 400 times faster instead of 11."""
    from daq.cli import demo

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "demo.toml")
    spec = demo.SIMULATION["synth-modbus"]
    # Idle 800 s of process time = 2 s: the synthesizer's 1 s poll period sees the flag fall.
    options = {**spec.options, "time_scale": "400", "idle_s": "800"}
    listener = await simulate.start(spec.kind, spec.listen, seed=1, faults=spec.faults, options=options)
    synth = next(i for i in cfg.instruments if i.name == cfg.model.runs.trigger_instrument)
    data_dir = tmp_path / "demo-data"
    daemon = Daemon(cfg.with_instruments([demo.attach(synth, listener)]).with_data_dir(data_dir))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        await wait_until(lambda: runs.runs_sealed >= 1, timeout=60)
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    with JournalReader(data_dir) as r:
        run = store.list_runs(r.conn)[0]
    assert run["started_by"] == "trigger:synth-modbus/sequence_running"
    assert run["ended_by"] == "trigger:synth-modbus/sequence_running"
    assert run["batch"].startswith("DEMO-")
    assert run["product"] == "[177Lu]Lu-PSMA-617"
    out = tmp_path / "export"
    write_export(data_dir, run["run_id"], out, "csv")
    assert verify_export(out, data_dir=data_dir).ok
    closing = demo.summary(data_dir)  # what `daq demo` prints when it stops
    assert "runs: 1 (1 sealed)" in closing
    assert f"daq export {run['run_id']} --data-dir {data_dir}" in closing


async def test_run_left_open_by_a_crash_is_closed_and_sealed_on_start(data_dir: Path) -> None:
    from daq.clock import SystemClock

    clock = SystemClock()
    journal = await Journal.open(data_dir, clock=clock)
    now = clock.time_ns()
    journal.record(
        "run_events",
        {"run_id": "R-crash", "kind": "start", "ts_ns": now, "mono_ns": clock.monotonic_ns(), "actor": "alice",
         "reason": None, "instrument": None,
         "detail": dumps({"batch": "B", "product": "P", "nuclide": "Lu-177", "operator": "alice"})},
    )  # fmt: skip
    await journal.flush()
    await journal.close()  # the daemon died here: no stop record
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: "runs" in daemon.services)
    daemon.request_stop()
    await task
    await sim.close()
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, "R-crash")
    assert run["seal"]
    assert run["ended_by"] == "daemon"
    assert "daemon stopped during the run" in run["stop_reason"]


async def test_config_change_is_audited_with_a_diff(data_dir: Path) -> None:
    for stale in (2.0, 3.5):
        sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
        cfg = vdc_config(data_dir, "socket://127.0.0.1:1")
        text = cfg.text.replace("stale_after_s = 2.0", f"stale_after_s = {stale}")
        text = text.replace("socket://127.0.0.1:1", sim.url)
        daemon = Daemon(parse_config(text, path="cell.toml"))
        task = asyncio.create_task(daemon.run())
        await wait_until(lambda d=daemon: "runs" in d.services)  # type: ignore[misc]
        daemon.request_stop()
        await task
        await sim.close()
    with JournalReader(data_dir) as r:
        diffs = [a["detail"] for a in r.audit() if a["action"] == "config_diff"]
    assert diffs[0]["previous_sha256"] is None
    assert diffs[0]["changed"]
    assert diffs[1]["previous_sha256"] == diffs[0]["sha256"]
    assert diffs[1]["changed"]
    assert "-stale_after_s = 2.0" in diffs[1]["diff"]
    assert "+stale_after_s = 3.5" in diffs[1]["diff"]


async def test_runs_list_and_show_cli(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = await record_run(data_dir, readings=5)
    capsys.readouterr()
    assert cli(["runs", "list", "--data-dir", str(data_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["run_id"] for x in listed] == [rec.run_id]
    assert cli(["runs", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert rec.run_id in out
    assert "LOT 42/A" in out
    assert "yes" in out
    assert cli(["runs", "show", rec.run_id, "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "Veenstra VDC-404" in out
    assert rec.annotation in out


def test_runs_cli_needs_a_token_and_a_daemon(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAQ_API_TOKEN", raising=False)
    args = ["runs", "stop", "--api", "http://127.0.0.1:9"]
    assert cli(args) == 1
    assert "no API token" in capsys.readouterr().err
    monkeypatch.setenv("DAQ_API_TOKEN", "secret-token")
    assert cli(args) == 1
    assert "cannot reach the daemon at http://127.0.0.1:9" in capsys.readouterr().err


async def test_runs_cli_through_the_daemons_api(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAQ_TEST_RUNS_TOKEN", "s3cret-token")
    sim = await Vdc404Simulator(options={"interval_s": "0.03"}).serve("tcp://127.0.0.1:0")
    cfg = vdc_config(data_dir, sim.url, '[api]\nport = 0\ntoken_env = "DAQ_TEST_RUNS_TOKEN"\n')
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: "api" in daemon.services and bool(getattr(daemon.services["api"], "url", None))
        )
        api: Any = daemon.services["api"]
        base = ["--api", api.url, "--token-env", "DAQ_TEST_RUNS_TOKEN", "--actor", "alice"]

        async def run_cli(*argv: str) -> int:
            return await asyncio.to_thread(cli, list(argv))

        start = ["runs", "start", "--batch", "B-7", "--product", "P", "--nuclide", "Lu177", "--operator", "o"]
        assert await run_cli(*start, *base) == 0
        printed = capsys.readouterr().out
        started: dict[str, Any] = daemon.services["runs"].active()  # type: ignore[attr-defined]
        assert f"run {started['run_id']}" in printed
        assert "nuclide        Lu-177" in printed
        assert started["batch"] == "B-7"
        assert await run_cli(*start, *base) == 1
        assert "refused (409)" in capsys.readouterr().err
        assert await run_cli("runs", "annotate", "cap checked", "--reason", "visual check", *base) == 0
        assert "annotate recorded for run " + started["run_id"] in capsys.readouterr().out
        assert await run_cli("runs", "t0", "--reason", "separation", "--instrument", "dc1", *base) == 0
        capsys.readouterr()
        wrong = ["--api", api.url, "--token-file", str(data_dir / "daemon.lock"), "--actor", "eve"]
        assert await run_cli("runs", "stop", *wrong) == 1
        assert "refused (401)" in capsys.readouterr().err
        assert await run_cli("runs", "stop", "--reason", "done", *base) == 0
        out = capsys.readouterr().out
        assert started["run_id"] in out
        assert "seal" in out
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, started["run_id"])
        audit = [a for a in r.audit() if a["run_id"] == started["run_id"]]
    assert run["seal"]
    assert run["annotations"][0]["text"] == "cap checked"
    assert run["annotations"][0]["actor"] == "alice"
    assert run["t0"][0]["reason"] == "separation"
    assert run["stop_reason"] == "done"
    assert {"run_start", "annotation", "t0", "run_stop", "run_sealed"} <= {a["action"] for a in audit}


async def test_same_batch_twice_within_a_second_gets_two_run_ids(data_dir: Path) -> None:
    from daq.clock import SystemClock

    class FrozenWall(SystemClock):
        """Real waits and monotonic time; a wall clock that stays in one second."""

        def time_ns(self) -> int:
            return 1_767_225_600_000_000_000

    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    daemon = Daemon(vdc_config(data_dir, sim.url), clock=FrozenWall())
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        ids = []
        for _ in range(3):
            run = await runs.open_run(batch="B", product="P", nuclide="Lu-177", operator="o", actor="a")
            await runs.close_run(actor="a")
            ids.append(run["run_id"])
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    assert ids == ["20260101T000000Z-B", "20260101T000000Z-B-2", "20260101T000000Z-B-3"]
    with JournalReader(data_dir) as r:
        listed = store.list_runs(r.conn)
    assert [x["run_id"] for x in listed] == ids
    assert all(x["seal"] for x in listed)


def test_runs_config_is_checked(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"runs.nuclide.*unknown nuclide 'Xx-1'"):
        vdc_config(data_dir, "socket://127.0.0.1:9", '[runs]\nnuclide = "Xx-1"\n')
    cfg = vdc_config(data_dir, "socket://127.0.0.1:9", '[runs]\nnuclide = "177Lu"\n')
    assert cfg.model.runs.nuclide == "Lu-177"


async def test_instrument_off_at_run_start_keeps_its_last_known_device_info(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.03"}).serve("tcp://127.0.0.1:0")
    url = sim.url
    daemon = Daemon(vdc_config(data_dir, url))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 3)
    daemon.request_stop()
    await task
    await sim.close()  # the calibrator is switched off before the next daemon start
    daemon = Daemon(vdc_config(data_dir, url))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services)
        runs: Any = daemon.services["runs"]
        run = await runs.open_run(batch="B", product="P", nuclide="Lu-177", operator="o", actor="a")
    finally:
        daemon.request_stop()
        await task
    dc1 = run["instruments"]["dc1"]
    assert dc1["connected"] is False
    assert dc1["device"]["model"] == "Veenstra VDC-404"
    assert dc1["device_seen_ns"] < run["started_ns"]
