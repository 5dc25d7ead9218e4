"""A real VictoriaMetrics server for tests and benchmarks (Debian package ``victoria-metrics``).

It accepts the InfluxDB v2 write API (``/api/v2/write``) and gives points back through
``/api/v1/export``. Started with ``-dedup.minScrapeInterval=1ms`` so that a replayed sample
(same series, same timestamp) is stored once, as InfluxDB would overwrite it, and with
``-retentionPeriod=100y`` so that old timestamps are kept. It keeps millisecond timestamps.

A missing binary is a test FAILURE, never a skip: ``apt-get install -y victoria-metrics``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

BINARY_NAMES = ("victoria-metrics", "victoria-metrics-prod")


def binary() -> str:
    for name in BINARY_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "VictoriaMetrics is not installed (tests need it): apt-get install -y victoria-metrics",
        pytrace=False,
    )


class Victoria:
    """One VictoriaMetrics process on 127.0.0.1; :meth:`stop` and :meth:`start` keep the port
    and the storage, as an outage and a restart of the real server would."""

    def __init__(self, storage: Path, *, extra_args: tuple[str, ...] = ()):
        self.storage = storage
        self.port = free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = storage.parent / f"victoria-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None
        args = [
            binary(),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.storage}",
            "-dedup.minScrapeInterval=1ms",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
            *self.extra_args,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"victoria-metrics exited with {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError:
                return  # it answers (with HTTP auth on, /health asks for credentials)
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"victoria-metrics did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM; it flushes what it accepted)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def flush(self) -> None:
        """Make every sample accepted so far visible to queries now (VictoriaMetrics' documented
        ``/internal/force_flush``) instead of after its in-memory buffering delay of about a second."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30) as resp:
            resp.read()

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series matching ``match``: ``{"metric": {...}, "values": [...], "timestamps": [...]}``,
        including samples accepted just before the call (it flushes first)."""
        self.flush()
        data = urllib.parse.urlencode({"match[]": match, "start": "0"}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=30) as resp:
            return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]

    def count(self, match: str = '{__name__!=""}') -> int:
        return sum(len(s["values"]) for s in self.export(match))


def victoria_server(tmp_path: Path, *extra_args: str) -> Iterator[Victoria]:
    """Start a server for one test and stop it afterwards (use from a fixture)."""
    storage = tmp_path / "victoria"
    vm = Victoria(storage, extra_args=extra_args)
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()
