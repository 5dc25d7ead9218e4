"""The node-opcua peer server (``tests/peers/opcua-node/server.js``): started once per run.

node-opcua takes about 6 s of CPU to start. Under xdist the controller starts one server when the
run includes ``tests/test_opcua_peer.py`` (:func:`start_for_run`, from ``tests/conftest.py``),
before the workers exist, and names it to them in ``$DAQ_TEST_OPCUA_PEER``; it holds the server's
standard input, so the server stops when the run ends, or when the controller dies. A run without
workers starts one for the module instead (:func:`start`). The peer tests only read from it, so
workers share it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PEER_DIR = Path(__file__).resolve().parent / "peers" / "opcua-node"
PEER_TESTS = Path(__file__).resolve().parent / "test_opcua_peer.py"
ENV = "DAQ_TEST_OPCUA_PEER"
READY = "listening on "


class PeerError(Exception):
    """The peer is not installed or did not start (the tests fail with this message)."""


@dataclass
class Peer:
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # only in the process that started it

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if any(line.startswith(READY) for line in text.splitlines()):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise PeerError(f"the node-opcua peer did not start:\n{text}")
            if time.monotonic() > deadline:
                raise PeerError(f"the node-opcua peer did not start within {timeout:.0f} s:\n{text}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the server stops when its standard input closes
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start(workdir: Path, port: int) -> Peer:
    """Start a peer listening on 127.0.0.1:``port``, keeping its certificates and log in ``workdir``."""
    node = shutil.which("node")
    if node is None:
        raise PeerError("node (Node.js) is not installed: the OPC UA peer tests need it")
    if not (PEER_DIR / "node_modules" / "node-opcua").is_dir():
        raise PeerError(f"node-opcua is not installed: run `npm ci` in {PEER_DIR}")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "peer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, "server.js", str(port), str(workdir)],
            cwd=PEER_DIR,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Peer(f"opc.tcp://127.0.0.1:{port}", log, proc)


def from_run() -> Peer | None:
    """The run's shared peer, when the controller started one."""
    named = os.environ.get(ENV)
    if not named:
        return None
    url, _, log = named.partition(" ")
    return Peer(url, Path(log))


def selected(args: list[str], rootdir: Path) -> bool:
    """Whether a run with these arguments collects the peer tests (roughly: a -k may still
    deselect them, and then the server was started for nothing)."""
    paths = [a.split("::")[0] for a in args if not a.startswith("-")]
    if not paths:
        return True
    for p in paths:
        path = (rootdir / p).resolve() if not Path(p).is_absolute() else Path(p)
        if path == PEER_TESTS or path in PEER_TESTS.parents:
            return True
    return False


def start_for_run(workdir: Path, port: int) -> Peer:
    peer = start(workdir, port)
    os.environ[ENV] = f"{peer.url} {peer.log}"
    return peer
