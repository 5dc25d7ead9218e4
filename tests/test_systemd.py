"""Running under systemd: sd_notify (READY, WATCHDOG, STATUS, STOPPING), the watchdog going
quiet when the journal stalls, journald priorities, and the unit and its companion files.

The service manager is stood in for by a datagram socket the test binds (a path and an
abstract name), with ``daq run`` as a real subprocess.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from daq.cli import build_parser, main
from daq.journal import verify_journal
from daq.logs import PriorityPrefix, stderr_is_journal
from daq.systemd import (
    Notifier,
    PipelineHealth,
    notify,
    notify_address,
    watchdog_interval_s,
)
from tests.helpers import config_text, free_port
from tests.proc import DAQ, start_simulator, stop

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "hotcell-daq.service"
SYSUSERS = ROOT / "systemd" / "hotcell-daq.sysusers.conf"
TMPFILES = ROOT / "systemd" / "hotcell-daq.tmpfiles.conf"
SANDBOX = Path(__file__).resolve().parent / "sd_sandbox.py"
HOTCELL = ROOT / "config" / "hotcell.toml"


# -- a stand-in for the service manager ---------------------------------------------------------


class FakeManager:
    """Binds the notify socket and records every datagram with its arrival time."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], *, after: float = 0.0,
                 timeout: float = 30.0) -> tuple[float, dict[str, str]]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, fields in self.snapshot():
                if t >= after and predicate(fields):
                    return t, fields
            time.sleep(0.02)
        raise AssertionError(f"no matching notification within {timeout} s; got {self.snapshot()[-5:]}")

    def wait_count(self, predicate: Callable[[dict[str, str]], bool], n: int, *, after: float,
                   timeout: float = 30.0) -> None:  # fmt: skip
        """Wait until ``n`` notifications sent at or after ``after`` match ``predicate``."""
        deadline = time.monotonic() + timeout
        while sum(1 for t, f in self.snapshot() if t >= after and predicate(f)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"not {n} matching notifications within {timeout} s")
            time.sleep(0.02)

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, f in self.snapshot() if f.get("WATCHDOG") == "1" and since <= t <= until]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sd-", dir="/tmp") as d:
        yield Path(d)


def run_daemon(cfg: Path, env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    full = {k: v for k, v in os.environ.items() if k not in drop}
    full.update(PYTHONUNBUFFERED="1", **env)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*DAQ, "run", "--config", str(cfg)], text=True, env=full, **kw)


def vdc_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "cell.toml"
    cfg.write_text(
        config_text(
            tmp_path / "data",
            [{"name": "dc1", "kind": "veenstra-vdc404", "port": f"socket://127.0.0.1:{port}",
              "backoff_initial_s": 0.05, "backoff_cap_s": 0.5}],
        )
    )  # fmt: skip
    return cfg


# -- the daemon under a fake service manager ---------------------------------------------------


def test_ready_watchdog_status_and_stopping_on_a_path_socket(tmp_path: Path, short_dir: Path) -> None:
    port = free_port()
    sim = start_simulator("veenstra-vdc404", port, "--set", "interval_s=0.02")
    manager = FakeManager(str(short_dir / "notify"))
    daemon = None
    try:
        cfg = vdc_config(tmp_path, port)
        daemon = run_daemon(cfg, {"NOTIFY_SOCKET": str(short_dir / "notify"), "WATCHDOG_USEC": "1000000"})
        t_ready, ready = manager.wait_for(lambda f: f.get("READY") == "1")
        # READY comes after the journal was opened and the instrument's supervisor started.
        assert (tmp_path / "data" / "journal.sqlite3").exists()
        assert re.search(r"\d/1 instruments connected", ready["STATUS"]), ready
        assert not manager.pings(until=t_ready), "WATCHDOG=1 before READY=1"
        manager.wait_for(lambda f: f.get("WATCHDOG") == "1" and "1/1 instruments connected" in f["STATUS"])
        manager.wait_count(lambda f: f.get("WATCHDOG") == "1", 5, after=t_ready)
        pings = manager.pings(since=t_ready)
        assert len(pings) >= 5, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Half of WATCHDOG_USEC (0.5 s); generous bounds for a loaded machine.
        assert 0.3 <= statistics.median(gaps) <= 0.9, gaps
        _, status = manager.snapshot()[-1]
        assert re.fullmatch(r"1/1 instruments connected, [\d.]+ readings/s, backlog \d+", status["STATUS"])
        rate = float(status["STATUS"].split(", ")[1].split()[0])
        assert rate > 5, status  # the simulator sends 50 lines/s
        t_term = time.monotonic()
        code, _, err = stop(daemon)
        assert code == 0, err
        t_stopping, stopping = manager.wait_for(lambda f: f.get("STOPPING") == "1", after=t_term, timeout=5)
        assert "stopping" in stopping["STATUS"]
        assert not manager.pings(since=t_stopping), "WATCHDOG=1 after STOPPING=1"
    finally:
        if daemon is not None and daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
        manager.close()
        stop(sim)


def test_abstract_socket_and_journald_priorities(tmp_path: Path) -> None:
    name = f"hotcell-daq-test-{uuid.uuid4().hex}"
    manager = FakeManager(b"\0" + name.encode())
    cfg = tmp_path / "cell.toml"
    cfg.write_text(config_text(tmp_path / "data", []))
    log_path = tmp_path / "stderr.log"
    daemon = None
    try:
        with log_path.open("w") as log:
            st = os.fstat(log.fileno())
            env = {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "400000",
                   "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}  # fmt: skip
            daemon = run_daemon(cfg, env, stderr=log, stdout=subprocess.DEVNULL)
            t_ready, ready = manager.wait_for(lambda f: f.get("READY") == "1")
            assert ready["STATUS"].startswith("0/0 instruments connected")
            manager.wait_for(lambda f: f.get("WATCHDOG") == "1", after=t_ready, timeout=10)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        manager.wait_for(lambda f: f.get("STOPPING") == "1", timeout=5)
    finally:
        if daemon is not None and daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
        manager.close()
    lines = log_path.read_text().splitlines()
    assert lines
    entries = []
    for line in lines:
        m = re.fullmatch(r"<([0-7])>(\{.*\})", line)
        assert m, f"not a <N>-prefixed JSON line: {line!r}"
        entries.append((int(m.group(1)), json.loads(m.group(2))))
    assert (6, "daemon started") in [(p, e["event"]) for p, e in entries]
    assert all(p == {"info": 6, "warning": 4, "error": 3}[e["level"]] for p, e in entries)


@pytest.mark.slow
def test_watchdog_stops_while_the_journal_cannot_commit(tmp_path: Path, short_dir: Path) -> None:
    port = free_port()
    sim = start_simulator("veenstra-vdc404", port, "--set", "interval_s=0.01")
    manager = FakeManager(str(short_dir / "notify"))
    cfg = vdc_config(tmp_path, port)
    db = tmp_path / "data" / "journal.sqlite3"
    daemon = None
    blocker: sqlite3.Connection | None = None
    try:
        daemon = run_daemon(cfg, {"NOTIFY_SOCKET": str(short_dir / "notify"), "WATCHDOG_USEC": "1000000"})
        t_ready, _ = manager.wait_for(lambda f: f.get("READY") == "1")
        manager.wait_for(lambda f: f.get("WATCHDOG") == "1" and "1/1" in f["STATUS"], after=t_ready)
        # Hold the database's write lock, as a stuck disk or another writer would: every
        # commit of the daemon now waits out its busy timeout and fails.
        blocker = sqlite3.connect(db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        t_block = time.monotonic()
        t_withheld, status = manager.wait_for(
            lambda f: "WATCHDOG" not in f and f.get("STATUS", "").startswith("journal"), after=t_block
        )
        assert status["STATUS"].startswith("journal stalled: no commit for")
        # Several watchdog intervals (0.5 s each) with the status reported and no WATCHDOG=1.
        manager.wait_count(lambda f: True, 5, after=t_withheld)
        assert manager.pings(since=t_withheld) == [], "WATCHDOG=1 sent while the journal was blocked"
        withheld = [f for t, f in manager.snapshot() if t >= t_withheld]
        assert len(withheld) >= 5  # the status kept being reported
        blocker.execute("ROLLBACK")
        blocker.close()
        blocker = None
        t_release = time.monotonic()
        manager.wait_for(lambda f: f.get("WATCHDOG") == "1", after=t_release, timeout=20)
        code, _, err = stop(daemon)
        assert code == 0, err
        manager.wait_for(lambda f: f.get("STOPPING") == "1", after=t_release, timeout=5)
        # The change is logged once each way, not at every tick.
        assert err.count('"watchdog pings withheld"') == 1, err
        assert err.count('"watchdog pings resumed"') == 1, err
    finally:
        if blocker is not None:
            blocker.close()
        if daemon is not None and daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
        manager.close()
        stop(sim)
    # Nothing was lost while the journal was blocked: the sequence has no holes.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    seqs = [r[0] for r in conn.execute("SELECT seq FROM readings WHERE instrument='dc1' ORDER BY id")]
    overflows = conn.execute("SELECT COUNT(*) FROM events WHERE kind='overflow'").fetchone()[0]
    conn.close()
    assert seqs == list(range(1, len(seqs) + 1))
    assert overflows == 0
    assert verify_journal(tmp_path / "data").ok


def test_daemon_runs_inside_the_units_sandbox(tmp_path: Path, short_dir: Path) -> None:
    """The unit's system-call filter, address families and W^X refusal, applied without
    systemd by tests/sd_sandbox.py: the daemon still acquires, reads the clock's sync state
    (adjtimex) and notifies; and the sandbox is really there (setuid and netlink fail)."""
    system_python = "/usr/bin/python3"
    assert Path(system_python).exists(), "the system Python runs tests/sd_sandbox.py"
    sandbox = [system_python, str(SANDBOX), str(UNIT)]
    probe = subprocess.run(
        [*sandbox, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["setuid:EPERM", "netlink:EAFNOSUPPORT", "wx-mmap:refused"]
    port = free_port()
    sim = start_simulator("veenstra-vdc404", port, "--set", "interval_s=0.02")
    manager = FakeManager(str(short_dir / "notify"))
    cfg = vdc_config(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(PYTHONUNBUFFERED="1", NOTIFY_SOCKET=str(short_dir / "notify"), WATCHDOG_USEC="1000000")
    daemon = subprocess.Popen([*sandbox, sys.executable, "-m", "daq", "run", "--config", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        t_ready, _ = manager.wait_for(lambda f: f.get("READY") == "1", timeout=60)
        manager.wait_for(lambda f: f.get("WATCHDOG") == "1" and "1/1 instruments connected" in f["STATUS"])
        manager.wait_for(lambda f: "WATCHDOG" in f and float(f["STATUS"].split(", ")[1].split()[0]) > 5)
        code, _, err = stop(daemon)
        assert code == 0, err
        manager.wait_for(lambda f: f.get("STOPPING") == "1", after=t_ready, timeout=5)
    finally:
        if daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
        manager.close()
        stop(sim)
    conn = sqlite3.connect(f"file:{tmp_path / 'data' / 'journal.sqlite3'}?mode=ro", uri=True)
    readings = conn.execute("SELECT COUNT(*) FROM readings WHERE quality = 0").fetchone()[0]
    sync = [json.loads(r[0]) for r in conn.execute("SELECT detail FROM audit WHERE action = 'clock_sync'")]
    conn.close()
    assert readings > 20
    assert sync
    assert sync[0]["source"] == "adjtimex", sync


PROBE = """
import errno, mmap, os, socket
try:
    os.setuid(0)
    print("setuid:allowed")
except OSError as e:
    print("setuid:" + errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    print("netlink:allowed")
except OSError as e:
    print("netlink:" + errno.errorcode[e.errno])
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx-mmap:allowed")
except OSError:
    print("wx-mmap:refused")
"""


# -- the protocol pieces --------------------------------------------------------------------------


def test_notify_address_forms() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify") == b"\0sd-notify"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            notify_address(bad)


def test_notifier_sends_one_datagram_and_never_raises(short_dir: Path) -> None:
    path = str(short_dir / "n")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n is not None
        assert n.send(READY=1, STATUS="two\nlines")
        assert rx.recv(4096) == b"READY=1\nSTATUS=two lines"
        assert notify({"NOTIFY_SOCKET": path}, WATCHDOG=1)
        assert rx.recv(4096) == b"WATCHDOG=1"
    finally:
        rx.close()
    # The manager went away: the send fails, is counted, and does not raise.
    assert not n.send(WATCHDOG=1)
    assert n.failed == 1
    n.close()
    assert not n.send(WATCHDOG=1)
    assert Notifier.from_env({}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "not-absolute"}) is None
    assert not notify({}, READY=1)


def test_watchdog_interval_from_environment() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, pid=42) == 0.5
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "43"}, pid=42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None


def test_pipeline_health_judges_progress() -> None:
    s = 1_000_000_000
    h = PipelineHealth(stall_after_s=2.0)
    assert h.check(0, commits=5, uncommitted=10, error=None) is None
    assert h.check(1 * s, commits=6, uncommitted=10, error=None) is None  # committing
    assert h.check(2 * s, commits=6, uncommitted=10, error=None) is None  # 1 s without: fine
    reason = h.check(3 * s, commits=6, uncommitted=12, error=None)
    assert reason is not None
    assert "no commit for 2.0 s with 12 waiting" in reason
    assert h.check(4 * s, commits=7, uncommitted=3, error=None) is None  # recovered
    assert h.check(10 * s, commits=7, uncommitted=0, error=None) is None  # idle is healthy
    # One failed commit is not a stall; failing for the whole period is, and says why.
    assert h.check(11 * s, commits=7, uncommitted=5, error="database is locked") is None
    assert h.check(12 * s, commits=8, uncommitted=5, error=None) is None
    assert h.check(13 * s, commits=8, uncommitted=5, error="disk I/O error") is None
    reason = h.check(14 * s, commits=8, uncommitted=9, error="disk I/O error")
    assert reason == "journal stalled: no commit for 2.0 s with 9 waiting (last error: disk I/O error)"


def test_priority_prefix_maps_levels() -> None:
    render = PriorityPrefix(structlog.processors.JSONRenderer())
    for level, n in (("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2)):
        line = render(None, level, {"event": "x", "level": level})
        assert line.startswith(f"<{n}>{{")
        assert json.loads(line[3:])["level"] == level


def test_stderr_is_journal_matches_device_and_inode(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, fd=a.fileno())
        assert not stderr_is_journal(env, fd=b.fileno())
        assert not stderr_is_journal({}, fd=a.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, fd=a.fileno())


# -- the unit and its companion files --------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_declares_notify_watchdog_and_serial_access() -> None:
    u = unit_settings(UNIT)
    assert u["Type"] == ["notify"]
    assert u["NotifyAccess"] == ["main"]
    assert u["Restart"] == ["on-failure"]
    assert u["WatchdogSec"]
    assert u["SupplementaryGroups"] == ["dialout"]
    assert u["DevicePolicy"] == ["closed"]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw"} <= set(u["DeviceAllow"])
    assert u["CapabilityBoundingSet"] == [""]
    assert u["NoNewPrivileges"] == ["yes"]
    assert u["StateDirectory"] == ["hotcell-daq"]
    assert u["ConfigurationDirectory"] == ["hotcell-daq"]
    # ExecStart is a command line this daq understands, on the installed config.
    exe, *argv = u["ExecStart"][0].split()
    assert exe == "/opt/hotcell-daq/venv/bin/daq"
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.config == "/etc/hotcell-daq/hotcell.toml"


def test_example_config_fits_the_unit() -> None:
    """config/hotcell.toml journals into the StateDirectory and asks only for credentials the
    unit loads."""
    u = unit_settings(UNIT)
    data = tomllib.loads(HOTCELL.read_text())
    assert data["daemon"]["data_dir"] == "/var/lib/" + u["StateDirectory"][0]
    loaded = {v.split(":")[0] for v in u["LoadCredential"]}

    def credentials(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_credential"):
                    yield v
                elif isinstance(v, str) and v.startswith("/run/credentials/"):
                    unit, _, name = v.removeprefix("/run/credentials/").partition("/")
                    assert unit == UNIT.name, v
                    yield name
                yield from credentials(v)
        elif isinstance(node, list):
            for v in node:
                yield from credentials(v)

    wanted = set(credentials(data))
    assert wanted, "the example should show how a secret is named"
    assert wanted <= loaded, wanted - loaded


def test_systemd_analyze_security_score_is_2_or_lower() -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install -y systemd"
    proc = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    m = re.search(r"Overall exposure level for hotcell-daq\.service: (\d+\.\d+)", out)
    assert m, out
    assert float(m.group(1)) <= 2.0, out
    # Every setting was understood: a typo is ignored with a warning, silently weakening the unit.
    assert "Unknown" not in out, out
    assert "ignoring" not in out, out


def test_sysusers_and_tmpfiles_apply_to_an_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, conf, extra in (
        ("systemd-sysusers", SYSUSERS, []),
        ("systemd-tmpfiles", TMPFILES, ["--create"]),
    ):
        exe = shutil.which(tool)
        assert exe, f"{tool} is missing: apt-get install -y systemd"
        with conf.open() as f:
            proc = subprocess.run([exe, f"--root={root}", *extra, "-"], stdin=f, capture_output=True,
                                  text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(r"^hotcell-daq:x:\d+:\d+:[^:]*:/var/lib/hotcell-daq:/usr/sbin/nologin$", passwd, re.M)
    assert (root / "etc" / "credstore").stat().st_mode & 0o777 == 0o700
    assert (root / "etc" / "hotcell-daq").is_dir()


# -- secrets stay out of the config ----------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        '[[sinks]]\nname = "influx"\nkind = "influxdb"\nurl = "http://127.0.0.1:8086"\norg = "o"\n'
        'bucket = "b"\ntoken = "s3cr3t-token"\n',
        '[[instruments]]\nname = "dc1"\nkind = "veenstra-vdc404"\nport = "socket://127.0.0.1:7001"\n'
        'token = "s3cr3t-token"\n',
    ],
    ids=["sink", "instrument"],
)
def test_check_config_refuses_an_inline_token(
    tmp_path: Path, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "cell.toml"
    p.write_text(f'[daemon]\ndata_dir = "{tmp_path}"\n\n{table}')
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err
    assert "[0].token" in err
    assert "credential" in err
    assert "s3cr3t" not in err  # the secret itself is not echoed


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(HOTCELL)]) == 0
    assert f"{HOTCELL}: OK" in capsys.readouterr().out
