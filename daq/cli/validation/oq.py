"""Operational qualification: acceptance scenarios against the simulators, in a scratch
data directory, through the real daemon and the real protocols.

One acquisition run (:func:`_acquire`) serves most scenarios: every instrument of the demo
cell is read from its simulator for a few seconds while faults are injected (frames with a
dropped byte, one instrument's server stopped and started again). The scenarios then check
the journal for what each requirement expects. Scenarios that need their own process (a
``daq run`` killed with SIGKILL) start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daq.cli import demo, simulate
from daq.cli.validation.results import SKIPPED, Scenario
from daq.configfile.load import Config, load_config
from daq.journal.journal import JOURNAL_FILE, connect
from daq.journal.verify import verify_journal

#: How the validation drives the demo cell: faults stronger than the demo's so that a few
#: seconds show them, and the instrument whose server is stopped and restarted.
_FAULTS = {"dc-vdc404": {"drop": 0.2}}
_OPTIONS = {"dc-vdc404": {"interval_s": "0.2"}}
_RESTARTED = "dc-vik202"
ACQUIRE_S = 9.0
OUTAGE_AT_S, RESTART_AT_S = 2.5, 4.5

SERIAL_KINDS = ("veenstra-vdc404", "capintec-crc35r", "comecer-vik202")


@dataclasses.dataclass
class Acquisition:
    """What the shared acquisition run left: its data directory and the wall times (ns) of
    its start, of the outage and of the restart."""

    data_dir: Path
    kinds: dict[str, str]
    start_ns: int
    outage_ns: int
    restart_ns: int
    end_ns: int
    error: str | None = None
    alarm_steps: list[tuple[str, str, str, bool]] = dataclasses.field(default_factory=list)


async def _acquire_async(data_dir: Path, seed: int) -> Acquisition:
    cfg = load_config(demo._default_config()).with_data_dir(data_dir)
    cfg = demo._with_api_port(cfg, 0)
    if cfg.model.api.token_env:
        os.environ.setdefault(cfg.model.api.token_env, demo.DEMO_TOKEN)
    cfg = cfg.with_instruments(
        [i.model_copy(update={"period_s": 0.5}) if i.name == _RESTARTED else i for i in cfg.instruments]
    )
    cfg = _with_tripping_limit(cfg)
    saved = dict(demo.SIMULATION)
    for name, faults in _FAULTS.items():
        spec = demo.SIMULATION[name]
        demo.SIMULATION[name] = dataclasses.replace(
            spec, faults=faults, options={**spec.options, **_OPTIONS.get(name, {})}
        )
    try:
        cfg, started = await demo.start_simulators(cfg, seed=seed)
    finally:
        demo.SIMULATION.clear()
        demo.SIMULATION.update(saved)
    listeners = {name: (spec, listener) for name, spec, listener in started}
    from daq.daemon import Daemon

    daemon = Daemon(cfg, seed=seed)
    acq = Acquisition(data_dir, {i.name: i.kind for i in cfg.instruments}, time.time_ns(), 0, 0, 0)

    async def fault_plan(_: Daemon) -> None:
        async def plan() -> None:
            spec, listener = listeners[_RESTARTED]
            url = listener.url
            await asyncio.sleep(OUTAGE_AT_S)
            acq.outage_ns = time.time_ns()
            await listener.close()
            await asyncio.sleep(RESTART_AT_S - OUTAGE_AT_S)
            acq.restart_ns = time.time_ns()
            listen = url.replace("socket://", "tcp://")
            new = await simulate.start(spec.kind, listen, seed=seed, faults=spec.faults, options=spec.options)
            listeners[_RESTARTED] = (spec, new)

        tasks.append(asyncio.create_task(plan(), name="validate-fault-plan"))
        tasks.append(
            asyncio.create_task(_alarm_plan(daemon, acq, cfg.model.api.token_env), name="validate-alarms")
        )

    tasks: list[asyncio.Task[None]] = []
    try:
        await daemon.run(duration_s=ACQUIRE_S, on_ready=fault_plan)
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for _, listener in listeners.values():
            await listener.close()
    acq.end_ns = time.time_ns()
    errors = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    if errors:
        acq.error = f"fault plan failed: {errors[0]!r}"
    return acq


def _with_tripping_limit(cfg: Config) -> Config:
    """The demo cell with its first alarm limit set below the process's ambient value, so that
    the alarm is raised within a second of the start."""
    alarms = getattr(cfg.model, "alarms", None)
    if alarms is None or not alarms.limits:
        return cfg
    first = alarms.limits[0].model_copy(update={"high": -50.0, "on_delay_s": 0.5, "deadband": 0.0})
    section = alarms.model_copy(update={"limits": [first, *alarms.limits[1:]]})
    return Config(cfg.model.model_copy(update={"alarms": section}), path=cfg.path, text=cfg.text)


async def _daq_async(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daq", *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, _ = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode(errors="replace")


def daq(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the ``daq`` command line in its own process: ``(exit status, output)``."""
    res = subprocess.run(
        [sys.executable, "-m", "daq", *argv], input=stdin, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip
    return res.returncode, res.stdout + res.stderr


async def _alarm_plan(daemon: Any, acq: Acquisition, token_env: str | None) -> None:
    """List the alarms through the API, and acknowledge the first as a named user."""
    api = getattr(daemon.services.get("api"), "url", None)
    steps = acq.alarm_steps
    if not api or not token_env:
        steps.append(("the local API", "serving", str(api), False))
        return
    await asyncio.sleep(3.0)
    code, text = await _daq_async("alarms", "list", "--api", api, "--json")
    try:
        listing = json.loads(text)
    except ValueError:
        listing = {}
    active = [a for a in listing.get("active", []) if isinstance(a, dict)]
    steps.append(
        (
            "daq alarms list (the daemon's API)",
            ">= 1 active alarm",
            f"exit {code}, {len(active)} active",
            bool(active),
        )
    )
    if not active:
        return
    alarm_id = str(active[0].get("alarm_id") or active[0].get("id"))
    code, text = await _daq_async(
        "alarms", "ack", alarm_id, "--api", api, "--token-env", token_env,
        "--actor", "oq-validation", "--comment", "acknowledged by the OQ",
    )  # fmt: skip
    steps.append((f"daq alarms ack {alarm_id}", "exit 0", f"exit {code}: {text.strip()[:200]}", code == 0))


def _rows(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = connect(data_dir / JOURNAL_FILE, read_only=True)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


class Context:
    """The scratch directory, the output directory, and the shared acquisition (made once)."""

    def __init__(self, out: Path, scratch: Path, seed: int = 1):
        self.out = out
        self.scratch = scratch
        self.seed = seed
        self._acq: Acquisition | None = None

    def acquisition(self) -> Acquisition:
        if self._acq is None:
            d = self.scratch / "acquisition"
            d.mkdir(parents=True, exist_ok=True)
            self._acq = asyncio.run(_acquire_async(d, self.seed))
        return self._acq


def _quality_counts(acq: Acquisition, instrument: str) -> dict[str, int]:
    rows = _rows(
        acq.data_dir, "SELECT quality, count(*) FROM readings WHERE instrument=? GROUP BY quality", instrument
    )
    names = {0: "GOOD", 1: "UNCERTAIN", 2: "BAD"}
    return {names.get(q, str(q)): n for q, n in rows}


def _acq_kind(ctx: Context, sc: Scenario, kinds: tuple[str, ...]) -> Scenario:
    acq = ctx.acquisition()
    names = [n for n, k in acq.kinds.items() if k in kinds]
    sc.check("instruments of this kind in the cell", ">= 1", names, bool(names))
    evidence: dict[str, Any] = {}
    for name in names:
        counts = _quality_counts(acq, name)
        evidence[name] = counts
        sc.check(f"{name}: GOOD readings journaled", ">= 1", counts, counts.get("GOOD", 0) >= 1)
        rows = _rows(
            acq.data_dir,
            "SELECT count(*) FROM readings WHERE instrument=?"
            " AND (acq_ns < ? OR acq_ns > ? OR quality NOT IN (0,1,2))",
            name,
            acq.start_ns - 10**9,
            acq.end_ns + 10**9,
        )
        sc.check(
            f"{name}: every reading has a UTC time within the run and a quality",
            "0 exceptions",
            rows[0][0],
            rows[0][0] == 0,
        )
    sc.evidence_json(ctx.out, "counts.json", evidence)
    return sc.finish()


def acq_serial(ctx: Context) -> Scenario:
    return _acq_kind(
        ctx, Scenario("OQ-ACQ-SERIAL", "Dose calibrators read over their serial protocols"), SERIAL_KINDS
    )


def acq_modbus(ctx: Context) -> Scenario:
    return _acq_kind(ctx, Scenario("OQ-ACQ-MODBUS", "Synthesizer read over Modbus TCP"), ("modbus",))


def acq_opcua(ctx: Context) -> Scenario:
    return _acq_kind(ctx, Scenario("OQ-ACQ-OPCUA", "Synthesizer read over OPC UA"), ("opcua",))


def acq_tlc(ctx: Context) -> Scenario:
    sc = Scenario("OQ-ACQ-TLC", "Radio-TLC scanner traces acquired")
    acq = ctx.acquisition()
    names = [n for n, k in acq.kinds.items() if k == "rtlc-scanner"]
    sc.check("TLC scanners in the cell", ">= 1", names, bool(names))
    for name in names:
        n = _rows(acq.data_dir, "SELECT count(*) FROM traces WHERE instrument=?", name)[0][0]
        sc.check(f"{name}: traces journaled", ">= 1", n, n >= 1)
    return sc.finish()


def bad_frame(ctx: Context) -> Scenario:
    sc = Scenario(
        "OQ-BAD-FRAME", "A bad frame is recorded BAD with raw bytes and a reason; acquisition continues"
    )
    acq = ctx.acquisition()
    name = next(iter(_FAULTS))
    sc.observe("fault injected", f"{name}: {_FAULTS[name]} (a dropped byte per frame at this rate)")
    bad = _rows(
        acq.data_dir,
        "SELECT id, reason, raw FROM readings WHERE instrument=? AND quality=2 AND reason='parse_error'",
        name,
    )
    sc.check("BAD parse_error records", ">= 1", len(bad), len(bad) >= 1)
    sc.check(
        "each carries its raw bytes",
        "raw not empty",
        sum(1 for b in bad if b[2]),
        bool(bad) and all(b[2] for b in bad),
    )
    if bad:
        after = _rows(
            acq.data_dir,
            "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND id > ?",
            name,
            bad[0][0],
        )[0][0]
        sc.check("GOOD readings after the first bad frame", ">= 1", after, after >= 1)
    sc.evidence_json(
        ctx.out,
        "bad-frames.json",
        [{"id": b[0], "reason": b[1], "raw": bytes(b[2] or b"").hex()} for b in bad],
    )
    return sc.finish()


def gap_disconnect(ctx: Context) -> Scenario:
    sc = Scenario("OQ-GAP-DISCONNECT", "A disconnection is recorded as a BAD gap with a reason")
    acq = ctx.acquisition()
    sc.observe(
        "fault injected",
        f"{_RESTARTED}: server stopped at +{OUTAGE_AT_S} s, started again at +{RESTART_AT_S} s",
    )
    if acq.error:
        sc.check("fault plan", "ran", acq.error, False)
    gaps = _rows(
        acq.data_dir,
        "SELECT id, channel, reason, acq_ns, value FROM readings"
        " WHERE instrument=? AND quality=2 AND acq_ns >= ?",
        _RESTARTED,
        acq.outage_ns,
    )
    reasons = sorted({g[2] for g in gaps})
    sc.check(
        "BAD records after the server stopped",
        ">= 1 with reason disconnected/connect_failed/timeout",
        reasons,
        any(r in ("disconnected", "connect_failed", "timeout") for r in reasons),
    )
    sc.check(
        "no value in a gap record",
        "value NULL",
        [g[4] for g in gaps if g[4] is not None][:3],
        all(g[4] is None for g in gaps),
    )
    good_in_outage = _rows(
        acq.data_dir,
        "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND acq_ns > ? AND acq_ns < ?",
        _RESTARTED,
        acq.outage_ns + 5 * 10**8,
        acq.restart_ns,
    )[0][0]
    sc.check("no GOOD reading while the server was down", "0", good_in_outage, good_in_outage == 0)
    sc.evidence_json(
        ctx.out, "gaps.json", [{"id": g[0], "channel": g[1], "reason": g[2], "acq_ns": g[3]} for g in gaps]
    )
    return sc.finish()


def server_restart(ctx: Context) -> Scenario:
    sc = Scenario("OQ-SERVER-RESTART", "Acquisition resumes after the instrument's server restarts")
    acq = ctx.acquisition()
    n = _rows(
        acq.data_dir,
        "SELECT count(*) FROM readings WHERE instrument=? AND quality=0 AND acq_ns > ?",
        _RESTARTED,
        acq.restart_ns,
    )[0][0]
    sc.check(f"{_RESTARTED}: GOOD readings after the restart", ">= 1", n, n >= 1)
    events = _rows(
        acq.data_dir, "SELECT kind, count(*) FROM events WHERE instrument=? GROUP BY kind", _RESTARTED
    )
    sc.observe("events of the instrument", dict(events))
    return sc.finish()


def verify(ctx: Context) -> Scenario:
    sc = Scenario("OQ-VERIFY", "`daq verify` confirms the journal's hash chains")
    acq = ctx.acquisition()
    report = verify_journal(acq.data_dir)
    sc.check("daq verify on the acquisition journal", "OK", report.problem or f"OK {report.rows}", report.ok)
    sc.evidence_json(ctx.out, "verify.json", report.as_dict())
    return sc.finish()


def tamper(ctx: Context) -> Scenario:
    sc = Scenario("OQ-TAMPER", "A changed record is detected by `daq verify`, naming it")
    acq = ctx.acquisition()
    copy = ctx.scratch / "tampered"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(acq.data_dir, copy)
    conn = sqlite3.connect(copy / JOURNAL_FILE)
    try:
        # Whoever edits a journal behind the daemon's back can drop its append-only triggers.
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        row = conn.execute(
            "SELECT id FROM readings WHERE quality=0 AND value IS NOT NULL ORDER BY id LIMIT 1 OFFSET 5"
        ).fetchone()
        conn.execute("UPDATE readings SET value = value * 1.01 WHERE id=?", (row[0],))
        conn.commit()
    finally:
        conn.close()
    sc.observe("change made to a copy of the journal", f"readings id {row[0]}: value multiplied by 1.01")
    report = verify_journal(copy)
    sc.check(
        "daq verify on the changed copy",
        f"FAILED naming readings {row[0]}",
        f"{report.table} {report.row_id}: {report.problem}",
        not report.ok and report.table == "readings" and report.row_id == row[0],
    )
    sc.evidence_json(ctx.out, "verify.json", report.as_dict())
    return sc.finish()


def clock_audit(ctx: Context) -> Scenario:
    sc = Scenario("OQ-CLOCK-AUDIT", "The clock's sync state is recorded in the audit trail")
    acq = ctx.acquisition()
    rows = _rows(acq.data_dir, "SELECT action, detail FROM audit WHERE action LIKE 'clock%'")
    sc.check("clock audit entries", ">= 1", [r[0] for r in rows][:5], len(rows) >= 1)
    return sc.finish()


def alarms(ctx: Context) -> Scenario:
    sc = Scenario("OQ-ALARMS", "An alarm raised, journaled and acknowledged by a named user")
    acq = ctx.acquisition()
    sc.observe(
        "limit set for the test",
        "the demo cell's first limit set to high -50 (always passed), on-delay 0.5 s",
    )
    for action, expected, actual, passed in acq.alarm_steps:
        sc.check(action, expected, actual, passed)
    rows = _rows(acq.data_dir, "SELECT alarm_id, kind, state, actor, comment FROM alarm_events ORDER BY id")
    kinds = [r[1] for r in rows]
    sc.check("alarm journal: the alarm raised", "a 'raised' event", kinds[:6], "raised" in kinds)
    acks = [r for r in rows if r[3] == "oq-validation"]
    sc.check(
        "alarm journal: the acknowledgement",
        "by oq-validation with its comment",
        acks[:1],
        bool(acks) and acks[0][4] == "acknowledged by the OQ",
    )
    sc.evidence_json(
        ctx.out,
        "alarm-events.json",
        [dict(zip(("alarm_id", "kind", "state", "actor", "comment"), r, strict=True)) for r in rows],
    )
    return sc.finish()


def _sealed_run(acq: Acquisition) -> str | None:
    rows = _rows(acq.data_dir, "SELECT run_id FROM run_events WHERE kind='stop' ORDER BY id LIMIT 1")
    return str(rows[0][0]) if rows else None


def run_seal(ctx: Context) -> Scenario:
    sc = Scenario("OQ-RUN-SEAL", "A run started by the process is closed and sealed")
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    sc.check("a sealed run in the journal", "1 run sealed", run_id, run_id is not None)
    code, text = daq("runs", "list", "--data-dir", str(acq.data_dir), "--json")
    sc.check("daq runs list", "exit 0", f"exit {code}", code == 0)
    path = ctx.out / "evidence" / "OQ-RUN-SEAL-runs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    sc.add_evidence(ctx.out, path)
    return sc.finish()


def export(ctx: Context) -> Scenario:
    sc = Scenario("OQ-EXPORT", "An export verified; a changed export refused")
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    if not sc.check("a sealed run to export", "1 run", run_id, run_id is not None):
        return sc.finish()
    assert run_id is not None
    outdir = ctx.scratch / "export"
    code, text = daq("export", run_id, "--data-dir", str(acq.data_dir), "--out", str(outdir))
    sc.check("daq export", "exit 0", f"exit {code}: {text.strip()[-200:]}", code == 0)
    code, text = daq("verify", "--export", str(outdir), "--data-dir", str(acq.data_dir))
    sc.check("daq verify --export", "OK", text.strip()[-200:], code == 0 and "OK" in text)
    changed = ctx.scratch / "export-changed"
    shutil.copytree(outdir, changed)
    victim = sorted(p for p in changed.rglob("*.csv") if p.stat().st_size)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, text = daq("verify", "--export", str(changed))
    sc.check(
        f"daq verify --export after one byte of {victim.name} flipped",
        f"FAILED naming {victim.name}",
        text.strip()[-200:],
        code != 0 and victim.name in text,
    )
    return sc.finish()


def signatures(ctx: Context) -> Scenario:
    sc = Scenario(
        "OQ-SIGNATURES", "An e-signature refused with a wrong password, accepted with the right one"
    )
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    if not sc.check("a sealed run to sign", "1 run", run_id, run_id is not None):
        return sc.finish()
    assert run_id is not None
    d = ctx.scratch / "signing"
    shutil.copytree(acq.data_dir, d)
    pw = "oq-correct-horse-battery"
    code, text = daq("users", "add", "oq-reviewer", "--name", "OQ Reviewer", "--roles", "admin,reviewer",
                     "--data-dir", str(d), stdin=f"{pw}\n")  # fmt: skip
    sc.check(
        "daq users add oq-reviewer (password from stdin)",
        "exit 0",
        f"exit {code}: {text.strip()[-150:]}",
        code == 0,
    )
    code, text = daq("runs", "sign", run_id, "--meaning", "reviewed", "--data-dir", str(d),
                     stdin="oq-reviewer\nwrong-password-0000\n")  # fmt: skip
    sc.check(
        "sign with a wrong password",
        "refused, non-zero exit",
        f"exit {code}: {text.strip()[-150:]}",
        code != 0,
    )
    code, text = daq("runs", "sign", run_id, "--meaning", "reviewed", "--comment", "OQ", "--data-dir", str(d),
                     stdin=f"oq-reviewer\n{pw}\n")  # fmt: skip
    sc.check(
        "sign with the right password", "accepted, exit 0", f"exit {code}: {text.strip()[-150:]}", code == 0
    )
    sigs = _rows(d, "SELECT user_id, meaning FROM signatures WHERE run_id=?", run_id)
    sc.check(
        "the signature names the signer and the meaning",
        "oq-reviewer reviewed",
        sigs,
        ("oq-reviewer", "reviewed") in [tuple(r) for r in sigs],
    )
    code, text = daq("verify", "--data-dir", str(d))
    sc.check("daq verify (chains and signatures)", "OK", text.strip()[-150:], code == 0)
    return sc.finish()


_KILL_CONFIG = """\
# The OQ's SIGKILL scenario: one dose calibrator, read from its simulator.
[daemon]
data_dir = "{data_dir}"
site = "oq-site"
cell = "oq-cell"

[journal]
commit_window_s = 0.05

[api]
enabled = false

[[instruments]]
name = "dc-kill"
kind = "veenstra-vdc404"
port = "{port}"
"""


async def _kill_restart(ctx: Context, sc: Scenario) -> None:
    d = ctx.scratch / "kill"
    d.mkdir(parents=True, exist_ok=True)
    listener = await simulate.start(
        "veenstra-vdc404", "tcp://127.0.0.1:0", seed=ctx.seed,
        options={"nuclide": "Lu-177", "activity_mbq": "7400", "interval_s": "0.05"},
    )  # fmt: skip
    try:
        config = d / "kill.toml"
        config.write_text(_KILL_CONFIG.format(data_dir=d / "data", port=listener.url), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "daq", "run", "--config", str(config)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        journal = d / "data" / JOURNAL_FILE
        seen: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 40:
            await asyncio.sleep(0.2)
            if journal.exists():
                with contextlib.suppress(sqlite3.Error):
                    seen = _rows(d / "data", "SELECT id, hash FROM readings ORDER BY id")
        sc.check(
            "daq run acquiring", ">= 40 committed readings seen by another reader", len(seen), len(seen) >= 40
        )
        proc.send_signal(signal.SIGKILL)
        code = await proc.wait()
        sc.check("SIGKILL mid-flow", "process killed (-9)", code, code == -signal.SIGKILL)
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "--duration",
            "4",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        code = await asyncio.wait_for(proc.wait(), 60)
        sc.check("daq run restarted on the same journal", "exit 0", code, code == 0)
        after = dict(_rows(d / "data", "SELECT id, hash FROM readings ORDER BY id"))
        lost = [i for i, h in seen if after.get(i) != h]
        sc.check(
            "every reading committed before the kill",
            "present, unchanged",
            f"{len(seen)} seen, {len(lost)} lost or changed",
            not lost,
        )
        newer = sum(1 for i in after if seen and i > seen[-1][0])
        sc.check("acquisition after the restart", ">= 1 new reading", newer, newer >= 1)
        report = verify_journal(d / "data")
        sc.check("daq verify after the kill and restart", "OK", report.problem or "OK", report.ok)
        sc.evidence_json(
            ctx.out,
            "verify.json",
            {"seen_before_kill": len(seen), "after": len(after), "verify": report.as_dict()},
        )
    finally:
        await listener.close()


def kill_restart(ctx: Context) -> Scenario:
    sc = Scenario("OQ-KILL-RESTART", "SIGKILL of `daq run` mid-flow, then restart: nothing committed lost")
    asyncio.run(_kill_restart(ctx, sc))
    return sc.finish()


def disk_full(ctx: Context) -> Scenario:
    sc = Scenario("OQ-DISK-FULL", "A full disk: an explicit error, nothing committed lost, writing resumes")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return sc.finish(
            SKIPPED,
            "not exercised: filling a file system needs a small one of its own (a tmpfs mount), which "
            "needs root; run the OQ as root, or test it in the PQ with a dedicated volume",
        )
    mnt = ctx.scratch / "small-fs"
    mnt.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        return sc.finish(
            SKIPPED, f"not exercised: a small tmpfs could not be mounted ({mounted.stderr.strip()})"
        )
    try:
        asyncio.run(_disk_full(ctx, sc, mnt))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    return sc.finish()


async def _disk_full(ctx: Context, sc: Scenario, mnt: Path) -> None:
    from daq.configfile.load import parse_config
    from daq.daemon import Daemon

    listener = await simulate.start(
        "veenstra-vdc404", "tcp://127.0.0.1:0", seed=ctx.seed, options={"interval_s": "0.0005"}
    )
    data_dir = mnt / "data"
    text = _KILL_CONFIG.format(data_dir=data_dir, port=listener.url).replace(
        "commit_window_s = 0.05", "commit_window_s = 0.05\nmax_pending = 2000"
    )
    daemon = Daemon(parse_config(text, path="oq-disk-full.toml"))
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (daemon.journal is None or daemon.journal.error is None):
            await asyncio.sleep(0.1)
        journal = daemon.journal
        error = journal.error if journal is not None else None
        sc.check("fill a 600 KiB file system", "the journal reports the full disk", error, bool(error))
        if journal is None or not error:
            return
        committed = journal.readings_committed
        sc.observe("readings committed when the disk filled", committed)
        grown = await asyncio.create_subprocess_exec("mount", "-o", "remount,size=64m", str(mnt))
        await grown.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            journal.error is not None or journal.readings_committed <= committed + 100
        ):
            await asyncio.sleep(0.1)
        resumed = journal.readings_committed - committed
        sc.check(
            "free space again", "commits resume (more than 100 further readings)", resumed,
            journal.error is None and resumed > 100,
        )  # fmt: skip
    finally:
        daemon.request_stop()
        await task
        await listener.close()
    report = verify_journal(data_dir)
    sc.check("daq verify", "every chain intact", report.problem or "intact", report.ok)
    audit = _rows(data_dir, "SELECT detail FROM audit WHERE action = 'journal_write_failed'")
    sc.check("the audit trail", "the write failure is audited", f"{len(audit)} entries", len(audit) > 0)
    overflow = _rows(data_dir, "SELECT COUNT(*) FROM events WHERE kind = 'overflow'")
    sc.observe("overflow records (readings that could not be held while the disk was full)", overflow[0][0])
    sc.evidence_json(ctx.out, "disk-full.json", {"error": error, "audit": [a[0] for a in audit]})


_FORWARD_SINK = """
[[sinks]]
name = "oq-victoria"
kind = "influxdb"
url = "{url}"
org = "oq"
bucket = "oq"
precision = "ms"
max_age_s = 0.2
backoff_initial_s = 0.2
backoff_cap_s = 1.0
"""


class _Victoria:
    """A VictoriaMetrics process on 127.0.0.1 that can be stopped and started on its port."""

    def __init__(self, binary: str, storage: Path):
        self.binary, self.storage = binary, storage
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.storage}",
             "-dedup.minScrapeInterval=1ms", "-retentionPeriod=100y", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=1):  # noqa: S310 (http to 127.0.0.1)
                return
            time.sleep(0.05)
        raise OSError("victoria-metrics did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def timestamps_ms(self) -> list[int]:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30) as r:  # noqa: S310
            r.read()
        data = urllib.parse.urlencode({"match[]": '{__name__!=""}', "start": "0"}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=30) as r:  # noqa: S310
            lines = r.read().decode().splitlines()
        return [t for line in lines if line.strip() for t in json.loads(line)["timestamps"]]


async def _forward(ctx: Context, sc: Scenario, binary: str) -> None:
    d = ctx.scratch / "forward"
    d.mkdir(parents=True, exist_ok=True)
    vm = _Victoria(binary, d / "victoria")
    vm.start()
    listener = await simulate.start(
        "veenstra-vdc404", "tcp://127.0.0.1:0", seed=ctx.seed,
        options={"nuclide": "Lu-177", "activity_mbq": "7400", "interval_s": "0.1"},
    )  # fmt: skip
    try:
        config = d / "forward.toml"
        text = _KILL_CONFIG.format(data_dir=d / "data", port=listener.url) + _FORWARD_SINK.format(url=vm.url)
        config.write_text(text, encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daq", "run", "--config", str(config), "--duration", "14",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(3)
        down_ns = time.time_ns()
        await asyncio.to_thread(vm.stop)
        sc.observe("outage", "victoria-metrics stopped at +3 s, started again on its port at +6 s")
        await asyncio.sleep(3)
        up_ns = time.time_ns()
        await asyncio.to_thread(vm.start)
        code = await asyncio.wait_for(proc.wait(), 60)
        sc.check("daq run through the outage", "exit 0", code, code == 0)
        stamps = await asyncio.to_thread(vm.timestamps_ms)
        during = sum(1 for t in stamps if down_ns // 10**6 + 200 <= t <= up_ns // 10**6)
        sc.check(
            "readings taken during the outage in the store",
            ">= 1 sample stamped in the outage",
            during,
            during >= 1,
        )
        last = _rows(d / "data", "SELECT max(id) FROM readings WHERE acq_ns < ?", up_ns + 3 * 10**9)[0][0]
        cursor = _rows(d / "data", "SELECT last_id FROM sink_cursors WHERE sink='oq-victoria'")
        got = cursor[0][0] if cursor else None
        due = f">= {last} (every reading up to 3 s after recovery)"
        sc.check(
            "the sink's cursor after recovery", due, got, got is not None and last is not None and got >= last
        )
        sc.evidence_json(
            ctx.out,
            "forward.json",
            {"samples": len(stamps), "during_outage": during, "cursor": got, "last_id_due": last},
        )
    finally:
        await listener.close()
        vm.stop()


def forward_outage(ctx: Context) -> Scenario:
    sc = Scenario("OQ-FORWARD-OUTAGE", "Forwarding to VictoriaMetrics with an outage")
    binary = shutil.which("victoria-metrics") or shutil.which("victoria-metrics-prod")
    if not binary:
        return sc.finish(SKIPPED, "victoria-metrics is not on PATH on this machine: forwarding not exercised")
    asyncio.run(_forward(ctx, sc, binary))
    return sc.finish()


SCENARIOS: dict[str, Callable[[Context], Scenario]] = {
    "OQ-ACQ-SERIAL": acq_serial,
    "OQ-ACQ-MODBUS": acq_modbus,
    "OQ-ACQ-OPCUA": acq_opcua,
    "OQ-ACQ-TLC": acq_tlc,
    "OQ-BAD-FRAME": bad_frame,
    "OQ-GAP-DISCONNECT": gap_disconnect,
    "OQ-SERVER-RESTART": server_restart,
    "OQ-VERIFY": verify,
    "OQ-TAMPER": tamper,
    "OQ-CLOCK-AUDIT": clock_audit,
    "OQ-KILL-RESTART": kill_restart,
    "OQ-DISK-FULL": disk_full,
    "OQ-RUN-SEAL": run_seal,
    "OQ-EXPORT": export,
    "OQ-ALARMS": alarms,
    "OQ-SIGNATURES": signatures,
    "OQ-FORWARD-OUTAGE": forward_outage,
}


def run_oq(out: Path, scratch: Path, only: list[str] | None = None) -> list[Scenario]:
    ctx = Context(out, scratch)
    results = []
    for sid, fn in SCENARIOS.items():
        if only and sid not in only:
            continue
        sc = Scenario(sid, sid)
        try:
            results.append(fn(ctx))
        except Exception as exc:  # a scenario that crashes is a failed scenario, never a crash of the pack
            sc.check("scenario ran", "no error", f"{type(exc).__name__}: {exc}", False)
            results.append(sc.finish())
    return results
