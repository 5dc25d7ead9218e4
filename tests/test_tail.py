"""``daq tail`` and ``daq status`` as a person runs them, against a real ``daq run`` process:
replay, follow, a daemon restart under a running tail, the status table."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daq.cli.tail import Printer
from tests.helpers import config_text, free_port
from tests.proc import DAQ, spawn, start_simulator, stop


class Lines:
    """Reads a process's stdout on a thread so a test can wait for lines with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.q: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        out = proc.stdout
        self.out = out
        self.thread = threading.Thread(target=self._read, args=(out,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        """After the process ended: the reader sees EOF, then the pipe is closed."""
        self.thread.join(10)
        self.out.close()

    def _read(self, out: Any) -> None:
        try:
            for line in out:
                self.q.put(line)
        except (ValueError, OSError):
            pass  # the pipe was closed under us: the process is gone

    def take(self, n: int, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got)} of {n} lines within {timeout} s: {got[-3:]}"
            try:
                got.append(self.q.get(timeout=left))
            except queue.Empty:
                continue
        return got


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not healthy within {timeout} s"
        time.sleep(0.1)


def cell(tmp_path: Path) -> tuple[Path, str, subprocess.Popen[str]]:
    sim_port, api_port = free_port(), free_port()
    sim = start_simulator("veenstra-vdc404", sim_port, "--set", "interval_s=0.05")
    cfg = tmp_path / "cell.toml"
    inst = {"name": "dc1", "kind": "veenstra-vdc404", "port": f"socket://127.0.0.1:{sim_port}",
            "backoff_initial_s": 0.05, "backoff_cap_s": 0.5}  # fmt: skip
    cfg.write_text(config_text(tmp_path / "data", [inst], f"[api]\nport = {api_port}\n"))
    return cfg, f"http://127.0.0.1:{api_port}", sim


@pytest.mark.slow
def test_tail_replays_follows_and_survives_a_daemon_restart(tmp_path: Path) -> None:
    cfg, url, sim = cell(tmp_path)
    daemon = spawn("run", "--config", str(cfg))
    tail = None
    tail_log = tmp_path / "tail.err"
    try:
        wait_healthy(url)
        time.sleep(1.0)  # some history to replay
        started_ns = time.time_ns()
        # Its stderr goes to a file: nothing reads a pipe of it until the end.
        with tail_log.open("w") as tail_stderr:
            tail = spawn(
                "tail", "--api", url, "--json", "--since", "1m", "--instrument", "dc1", stderr=tail_stderr
            )
        lines = Lines(tail)
        first = [json.loads(x) for x in lines.take(30)]
        assert first[0]["acq_ns"] < started_ns, "--since replayed nothing"
        assert first[-1]["acq_ns"] > started_ns - 100_000_000
        assert {r["instrument"] for r in first} == {"dc1"}

        code, _, err = stop(daemon)
        assert code == 0, err
        time.sleep(1.0)
        restarted_ns = time.time_ns()
        daemon = spawn("run", "--config", str(cfg))
        wait_healthy(url)
        later: list[dict[str, Any]] = []
        while not later or later[-1]["acq_ns"] < restarted_ns + 500_000_000:
            later.extend(json.loads(x) for x in lines.take(1))
    finally:
        if tail is not None:
            tail.send_signal(signal.SIGINT)
            try:
                tail_code: int | None = tail.wait(timeout=20)
            except subprocess.TimeoutExpired:
                tail.send_signal(signal.SIGABRT)  # its stacks to its stderr, then it ends
                tail.wait(timeout=20)
                tail_code = None
            lines.close()
            tail_err = tail_log.read_text()
        stop(daemon)
        stop(sim)
    assert tail_code == 130, f"daq tail did not end on SIGINT:\n{tail_err[-6000:]}"
    assert "retrying" in tail_err
    assert "reconnected" in tail_err
    seqs = [r["seq"] for r in first + later]
    # Every reading once, none lost across the restart: sequence numbers run on without a gap.
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # dc1 is the journal's only instrument, so its readings' journal ids run on too: the
    # reconnect resumed after the last id shown (since_id), with no duplicate and no gap.
    ids = [r["id"] for r in first + later]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert any(r["acq_ns"] > restarted_ns for r in later)


@pytest.mark.slow
def test_status_asks_the_running_daemon(tmp_path: Path) -> None:
    cfg, url, sim = cell(tmp_path)
    daemon = spawn("run", "--config", str(cfg))
    try:
        wait_healthy(url)
        time.sleep(0.5)
        table = subprocess.run([*DAQ, "status", "--api", url], capture_output=True, text=True, timeout=60)
        as_json = subprocess.run(
            [*DAQ, "status", "--api", url, "--json"], capture_output=True, text=True, timeout=60
        )
        text_tail = subprocess.run(
            [*DAQ, "tail", "--api", url, "--since", "10s", "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # A filter that matches nothing says so and ends on time, not after the stream's timeout.
        started = time.monotonic()
        nosuch = subprocess.run(
            [*DAQ, "tail", "--api", url, "--instrument", "nosuch", "--duration", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        quiet = subprocess.run(
            [*DAQ, "tail", "--api", url, "--channel", "no_such_*", "--duration", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        both_s = time.monotonic() - started
    finally:
        stop(daemon)
        stop(sim)
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if line.startswith("instrument"))
    assert "state" in header
    assert "last value" in header
    assert "reconnects" in header
    row = next(line for line in table.stdout.splitlines() if line.startswith("dc1 "))
    assert "connected" in row
    assert " s " in row  # the age of the last value
    data = json.loads(as_json.stdout)
    assert data["instruments"]["dc1"]["state"] == "connected"
    assert "activity" in data["instruments"]["dc1"]["channels"]
    assert text_tail.returncode == 0, text_tail.stderr
    rows = text_tail.stdout.splitlines()
    assert len(rows) > 5
    assert all("dc1" in r and "activity" in r and "GOOD" in r for r in rows)
    assert all(re.search(r" [kMGT]?Bq ", r) for r in rows)  # activities in display units
    assert "\x1b[" not in text_tail.stdout  # no colour when not on a terminal
    assert nosuch.returncode == 1
    assert nosuch.stderr.strip() == f"daq: error: no instrument 'nosuch' in the daemon at {url} (it has: dc1)"
    assert quiet.returncode == 0, quiet.stderr
    assert "no channel seen so far matches no_such_*" in quiet.stderr
    assert "lost" not in quiet.stderr
    assert "retrying" not in quiet.stderr
    assert both_s < 15  # the quiet tail ended at --duration, not after 20 s of silence


def test_status_without_a_daemon_says_so(dead_port: int) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    proc = subprocess.run([*DAQ, "status", "--api", url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"no daemon answering at {url}" in proc.stderr


def test_tail_columns_align_and_colour_by_quality() -> None:
    class Out:
        def isatty(self) -> bool:
            return True

    p = Printer(Out(), as_json=False, colour=True)  # type: ignore[arg-type]
    base: dict[str, Any] = {"acq_ns": 1_767_225_600_123_000_000, "unit": "Bq", "reason": None}
    good = p.line({**base, "instrument": "dc1", "channel": "activity", "value": 7.4e9, "quality": "GOOD"})
    bad = p.line({**base, "instrument": "dc1", "channel": "activity", "value": None, "quality": "BAD",
                  "reason": "timeout"})  # fmt: skip
    assert "\x1b[32mGOOD" in good
    assert bad.startswith("\x1b[31m")
    assert re.search(r"BAD +timeout", bad)
    assert re.search(r" 7\.4 GBq ", good)  # 7.4e9 Bq in the unit people read
    shown = p.line({**base, "instrument": "dc1", "channel": "activity", "value": 7.4e9, "quality": "GOOD",
                    "attrs": {"reported_value": 7.4, "reported_unit": "GBq", "nuclide": "Lu-177"}})  # fmt: skip
    assert re.search(r"GOOD +\(7.4 GBq, Lu-177\)", shown)
    exact = p.line({**base, "instrument": "dc1", "channel": "activity", "value": 7.4e9, "quality": "GOOD",
                    "attrs": {"reported_value": 7.4, "reported_text": "7.400", "reported_unit": "GBq"}})  # fmt: skip
    assert "(7.400 GBq)" in exact  # the figure as the instrument displayed it
    plain = Printer(Out(), as_json=False, colour=False)  # type: ignore[arg-type]
    a = plain.line({**base, "instrument": "dc1", "channel": "activity", "value": 1.0, "quality": "GOOD"})
    b = plain.line({**base, "instrument": "dc1", "channel": "reactor_temp", "value": 2.0, "quality": "GOOD"})
    assert a.index("GOOD") == b.index("GOOD")  # the columns line up
    c = Printer(Out(), as_json=False, colour=False).line(  # type: ignore[arg-type]
        {**base, "instrument": "synth-modbus", "channel": "reactor_temp", "value": 2.0, "quality": "GOOD"}
    )
    d = Printer(Out(), as_json=False, colour=False).line(  # type: ignore[arg-type]
        {**base, "instrument": "dc1", "channel": "activity", "value": 1.5e10, "quality": "GOOD"}
    )
    assert c.index("GOOD") == d.index("GOOD")  # fixed widths: separate tails line up too
