"""Driver/simulator pairs of the serial instruments, for the contract and fault suites."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daq.daemon import Daemon
from simulators import SIMULATORS
from simulators.base import Listener, Simulator
from simulators.line import PATTERN, TIME_FORMAT
from tests.helpers import make_config, wait_until

FAST = {"backoff_initial_s": 0.1, "backoff_cap_s": 0.5}


@dataclasses.dataclass(frozen=True)
class Pair:
    """One driver kind, the config keys it needs, and how to simulate it."""

    id: str
    kind: str
    config: dict[str, Any]
    options: dict[str, str]
    channels: tuple[str, ...] = ("activity",)

    def simulator(self, *, seed: int = 0, faults: dict[str, float] | None = None, **kw: Any) -> Simulator:
        return SIMULATORS[self.kind](seed=seed, faults=faults, options=self.options, **kw)

    def instrument(self, name: str, port: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "kind": self.kind, "port": port, **FAST, **self.config, **extra}


POLLED = {"period_s": 0.2, "timeout_s": 0.15}

PAIRS = [
    Pair("vdc404", "veenstra-vdc404", {"stale_after_s": 1.0}, {"interval_s": "0.05"}),
    Pair(
        "crc35r",
        "capintec-crc35r",
        {**POLLED, "chambers": [1, 2]},
        {"chambers": "2", "nuclide": "F18,Ac225"},
        ("chamber1", "chamber2"),
    ),
    Pair("atomlab500", "biodex-atomlab500", POLLED, {}),
    Pair("vik202", "comecer-vik202", POLLED, {}),
    Pair(
        "line-polled",
        "line",
        {**POLLED, "pattern": PATTERN, "device_time_format": TIME_FORMAT, "poll_command": "RD"},
        {"poll": "1"},
    ),
    Pair(
        "line-stream",
        "line",
        {"pattern": PATTERN, "device_time_format": TIME_FORMAT, "stale_after_s": 1.0},
        {"interval_s": "0.05"},
    ),
]
PAIR = {p.id: p for p in PAIRS}


async def run_daemon(
    data_dir: Path, instruments: list[dict[str, Any]], until: Callable[[Daemon], bool], timeout: float = 20.0
) -> Daemon:
    """Run a daemon on ``instruments`` until ``until(daemon)`` holds, then stop it."""
    daemon = Daemon(make_config(data_dir, instruments))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.supervisors), timeout=timeout)
        await wait_until(lambda: until(daemon), timeout=timeout)
    finally:
        daemon.request_stop()
        await task
    return daemon


async def serve(sim: Simulator, listen: str = "tcp://127.0.0.1:0") -> Listener:
    return await sim.serve(listen)
