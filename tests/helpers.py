"""Test helpers: waiting for conditions, free ports, building configs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from daq.config.load import Config, parse_config


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
