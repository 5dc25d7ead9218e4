"""Test helpers: waiting for conditions, free ports, building configs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from daq.configfile.load import Config, parse_config

if TYPE_CHECKING:
    from daq.model import Reading
    from drivers.base import Driver


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail with a clear message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(
    data_dir: Path,
    instruments: list[dict[str, Any]],
    extra: str = "",
    journal: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> str:
    """A config file text with ``instruments`` as ``[[instruments]]`` tables (flat keys);
    ``daemon`` adds keys to ``[daemon]`` (a config with a sink names its site and cell)."""
    journal = {"commit_window_s": 0.02, **(journal or {})}
    data: dict[str, Any] = {"daemon": {"data_dir": str(data_dir), **(daemon or {})}, "journal": journal}
    if instruments:  # none: ``extra`` may bring [[instruments]] tables of its own
        data["instruments"] = instruments
    text = tomli_w.dumps(data)
    if "[api]" not in extra:
        # Test daemons keep the local API off unless a test asks for it (on port 0), so
        # parallel daemons never contend for the default port.
        extra += "\n[api]\nenabled = false\n"
    return text + "\n" + extra


def make_config(
    data_dir: Path,
    instruments: list[dict[str, Any]],
    extra: str = "",
    journal: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> Config:
    return parse_config(config_text(data_dir, instruments, extra, journal, daemon), path="test.toml")


async def collect(
    driver: Driver, until: Callable[[list[Reading]], bool], timeout: float = 10.0
) -> list[Reading]:
    """Read ``driver`` until ``until(readings)`` holds, standing in for its supervisor: polls on
    ``period_s``, the driver's duties (node retries, polled nodes) on their grid, reads of a
    streaming or subscription driver in between (its silence limit is not applied)."""
    from daq.clock import SystemClock
    from daq.supervisor import DutyGrid
    from drivers.base import Capability, Deadline

    clock = SystemClock()
    duties = DutyGrid(driver.duties(), clock.monotonic_ns())
    out: list[Reading] = []
    async with asyncio.timeout(timeout):
        while not until(out):
            for duty in duties.take_due(clock.monotonic_ns()):
                out.extend(await duty.call(Deadline.after(clock, duty.timeout_s)))
            if driver.capability is Capability.POLLED:
                out.extend(await driver.read())
                await asyncio.sleep(driver.config.period_s)
                continue
            due = duties.next_due()
            wait_s = None if due is None else max(0.0, (due - clock.monotonic_ns()) / 1e9)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    out.extend(await driver.read())
    return out
