"""What the OQ scenarios share: the one acquisition run most of them read (:func:`_acquire_async`:
every instrument of the demo cell read from its simulator for a few seconds while faults are
injected), the scenario context that makes it once, and helpers to run ``daq`` and read the
journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daq.cli import demo, simulate
from daq.configfile.load import Config, load_config
from daq.journal.journal import JOURNAL_FILE, connect

#: How the validation drives the demo cell: faults stronger than the demo's so that a few
#: seconds show them, and the instrument whose server is stopped and restarted.
FAULTS = {"dc-vdc404": {"drop": 0.2}}
_OPTIONS = {"dc-vdc404": {"interval_s": "0.2"}}
RESTARTED = "dc-vik202"
ACQUIRE_S = 9.0
OUTAGE_AT_S, RESTART_AT_S = 2.5, 4.5
#: How long the acquisition may go on past :data:`ACQUIRE_S` for its plans to finish: the
#: alarm plan waits for the alarm and runs ``daq`` twice, which a loaded machine starts in
#: seconds each. A bound on a stuck plan, never a wait: the run ends as soon as they are done.
PLANS_LIMIT_S = 120.0

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
        [i.model_copy(update={"period_s": 0.5}) if i.name == RESTARTED else i for i in cfg.instruments]
    )
    cfg = _with_tripping_limit(cfg)
    saved = dict(demo.SIMULATION)
    for name, faults in FAULTS.items():
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
            spec, listener = listeners[RESTARTED]
            url = listener.url
            await asyncio.sleep(OUTAGE_AT_S)
            acq.outage_ns = time.time_ns()
            await listener.close()
            await asyncio.sleep(RESTART_AT_S - OUTAGE_AT_S)
            acq.restart_ns = time.time_ns()
            listen = url.replace("socket://", "tcp://")
            new = await simulate.start(spec.kind, listen, seed=seed, faults=spec.faults, options=spec.options)
            listeners[RESTARTED] = (spec, new)

        tasks.append(asyncio.create_task(plan(), name="validate-fault-plan"))
        tasks.append(
            asyncio.create_task(_alarm_plan(daemon, acq, cfg.model.api.token_env), name="validate-alarms")
        )
        tasks.append(asyncio.create_task(stop_when_done(list(tasks)), name="validate-stop"))

    async def stop_when_done(plans: list[asyncio.Task[None]]) -> None:
        # ACQUIRE_S of acquisition, and the plans done: a plan cut short by a fixed end
        # (the acknowledgement still on its way) would fail its scenario on a slow machine.
        await asyncio.sleep(ACQUIRE_S)
        _, pending = await asyncio.wait(plans, timeout=PLANS_LIMIT_S)
        late = f"not finished {PLANS_LIMIT_S:g} s after the acquisition's {ACQUIRE_S:g} s"
        for task in pending:
            if task.get_name() == "validate-alarms":
                acq.alarm_steps.append(("the alarm plan", "finished", late, False))
            else:
                acq.error = f"fault plan {late}"
        daemon.request_stop()

    tasks: list[asyncio.Task[None]] = []
    try:
        await daemon.run(on_ready=fault_plan)
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


async def daq_async(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
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
    """Wait for the alarm of the limit set for the test (:func:`_with_tripping_limit`), list
    the alarms through the API, and acknowledge that one as a named user."""
    api = getattr(daemon.services.get("api"), "url", None)
    steps = acq.alarm_steps
    if not api or not token_env:
        steps.append(("the local API", "serving", str(api), False))
        return
    limits = daemon.config.model.alarms.limits
    if not limits:
        steps.append(("a limit to trip", "the demo cell's first limit", "no limit configured", False))
        return
    tripped = (limits[0].instrument, limits[0].channel)

    def of_limit(alarm: dict[str, Any]) -> bool:
        return (alarm.get("instrument"), alarm.get("channel")) == tripped

    # Raised once the instrument's readings have passed the limit for its on-delay: waited
    # for (the stop of the acquisition bounds it), as a loaded machine reads late.
    while not any(of_limit(a) for a in daemon.alarms.active()):
        await asyncio.sleep(0.05)
    code, text = await daq_async("alarms", "list", "--api", api, "--json")
    try:
        listing = json.loads(text)
    except ValueError:
        listing = {}
    active = [a for a in listing.get("active", []) if isinstance(a, dict)]
    ours = [a for a in active if of_limit(a)]
    steps.append(
        (
            "daq alarms list (the daemon's API)",
            f">= 1 active alarm, one of {tripped[0]}/{tripped[1]}",
            f"exit {code}, {len(active)} active, {len(ours)} of {tripped[0]}/{tripped[1]}",
            bool(ours),
        )
    )
    if not ours:
        return
    alarm_id = str(ours[0].get("alarm_id") or ours[0].get("id"))
    code, text = await daq_async(
        "alarms", "ack", alarm_id, "--api", api, "--token-env", token_env,
        "--actor", "oq-validation", "--comment", "acknowledged by the OQ",
    )  # fmt: skip
    steps.append((f"daq alarms ack {alarm_id}", "exit 0", f"exit {code}: {text.strip()[:200]}", code == 0))


def journal_rows(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
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


def quality_counts(acq: Acquisition, instrument: str) -> dict[str, int]:
    rows = journal_rows(
        acq.data_dir, "SELECT quality, count(*) FROM readings WHERE instrument=? GROUP BY quality", instrument
    )
    names = {0: "GOOD", 1: "UNCERTAIN", 2: "BAD"}
    return {names.get(q, str(q)): n for q, n in rows}
