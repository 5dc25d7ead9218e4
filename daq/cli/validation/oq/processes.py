"""OQ scenarios that need processes of their own: a ``daq run`` killed with SIGKILL and
restarted, a full disk, a forwarding outage against a local VictoriaMetrics.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from pathlib import Path
from typing import Any

from daq.cli import simulate
from daq.cli.validation.oq.shared import (
    Context,
    journal_rows,
)
from daq.cli.validation.results import SKIPPED, Scenario
from daq.journal.journal import JOURNAL_FILE
from daq.journal.verify import verify_journal

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
                    seen = journal_rows(d / "data", "SELECT id, hash FROM readings ORDER BY id")
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
        after = dict(journal_rows(d / "data", "SELECT id, hash FROM readings ORDER BY id"))
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
    audit = journal_rows(data_dir, "SELECT detail FROM audit WHERE action = 'journal_write_failed'")
    sc.check("the audit trail", "the write failure is audited", f"{len(audit)} entries", len(audit) > 0)
    overflow = journal_rows(data_dir, "SELECT COUNT(*) FROM events WHERE kind = 'overflow'")
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
        before_up = up_ns + 3 * 10**9
        last = journal_rows(d / "data", "SELECT max(id) FROM readings WHERE acq_ns < ?", before_up)[0][0]
        cursor = journal_rows(d / "data", "SELECT last_id FROM sink_cursors WHERE sink='oq-victoria'")
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
