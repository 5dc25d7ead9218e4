"""Helpers for tests that run ``daq`` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DAQ = [sys.executable, "-m", "daq"]


def spawn(*args: str, **kw: object) -> subprocess.Popen[str]:
    """``daq ARGS`` as a process, its output on pipes unless ``kw`` says otherwise. SIGABRT
    makes it print every thread's stack to its stderr (faulthandler), for a test to show
    where a process that should have ended is stuck."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    opts: dict[str, object] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen([*DAQ, *args], text=True, env=env, **opts)  # type: ignore[call-overload, no-any-return]


def start_simulator(kind: str, port: int, *args: str) -> subprocess.Popen[str]:
    proc = spawn("simulate", kind, "--listen", f"tcp://127.0.0.1:{port}", *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)
