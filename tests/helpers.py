"""Test helpers: waiting for conditions, free and refused ports, building configs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from daq.configfile.load import Config, parse_config

if TYPE_CHECKING:
    from daq.daemon import Daemon
    from daq.model import Reading
    from daq.supervisor import Supervisor
    from drivers.base import Driver


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail with a clear message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


#: How many disjoint port ranges ``free_port`` deals out: one per pytest-xdist worker (gw0,
#: gw1, ...) and one for a process that is not a worker (the controller, a plain pytest run).
PORT_SLICES = 16


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_range(worker: str | None = None) -> range:
    """The ports ``free_port`` gives out in this process (``worker``: an xdist worker id, by
    default this process's own).

    Below the kernel's ephemeral range, which ``bind(("127.0.0.1", 0))`` and outgoing
    connections draw from, so no server that picks its own port (every simulator the tests
    start on port 0) and no client's source port can take one of these; and each worker has a
    slice of its own, so no other worker hands out the same port. A port merely free a moment
    ago was once another test's dose calibrator by the time a daemon's API came to bind it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    top = _ephemeral_low()
    bottom = max(1024, top - 12_000)
    size = (top - bottom) // PORT_SLICES
    start = bottom + (index % PORT_SLICES) * size
    return range(start, start + size)


_next_port = itertools.count(os.getpid())


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and that nothing else in the suite will take, for a
    server the test starts on it (see ``port_range``). Not for a port that must stay
    unanswered: a test may start a server on any port it was given; see ``refused_port``."""
    ports = port_range()
    for _ in range(len(ports)):
        port = ports[next(_next_port) % len(ports)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or in TIME_WAIT from this worker's last test on it
            return port
    raise AssertionError(f"no free port in {ports}")


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection until the block ends.

    A socket is bound to it and never listens. It is bound without SO_REUSEADDR, so no other
    socket (a simulator in another test worker, say) can bind the port meanwhile, and the kernel
    hands it to no one: a port that was merely free a moment ago once came back answering as
    another test's dose calibrator."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def toml_table(name: str, values: dict[str, Any]) -> str:
    """``values`` as one ``[[name]]`` table of an array of tables, written by tomli-w, that stays
    a table of its own wherever it is put in a file (tomli-w writes a short array of tables
    inline): scalar keys one a line, nested tables and arrays of tables as ``[name.key]`` and
    ``[[name.key]]``."""
    # A table under a placeholder key is always written with headers; its header lines are
    # then those of the array's newest element.
    text = tomli_w.dumps({name: {"_": values}})
    out = []
    for line in text.splitlines(keepends=True):
        if line == f"[{name}._]\n":
            line = f"[[{name}]]\n"
        elif line.startswith((f"[{name}._.", f"[[{name}._.")):
            line = line.replace(f"{name}._.", f"{name}.", 1)
        out.append(line)
    return "".join(out)


def instrument_table(inst: dict[str, Any]) -> str:
    """One ``[[instruments]]`` table (see :func:`toml_table`)."""
    return toml_table("instruments", inst)


def config_text(
    data_dir: Path,
    instruments: list[dict[str, Any]],
    extra: str = "",
    journal: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> str:
    """A config file text with ``instruments`` as ``[[instruments]]`` tables, one key a line
    (tests add keys by replacing a line); ``daemon`` adds keys to ``[daemon]`` (a config with a
    sink names its site and cell). ``extra`` (TOML text, starting with a table) follows."""
    journal = {"commit_window_s": 0.02, **(journal or {})}
    text = tomli_w.dumps({"daemon": {"data_dir": str(data_dir), **(daemon or {})}, "journal": journal})
    text += "".join("\n" + instrument_table(inst) for inst in instruments)
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


@contextlib.asynccontextmanager
async def api_daemon(cfg: Config) -> AsyncIterator[tuple[Daemon, str]]:
    """Run a daemon of ``cfg`` (its ``[api]`` on port 0) until the context ends; yields the
    daemon and its API's URL once both are up. A daemon that fails to start fails the test
    with its own error."""
    from daq.api.server import ApiService
    from daq.daemon import Daemon

    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(), name="test-daemon")
    try:
        await wait_until(lambda: daemon.ready.is_set() or task.done(), timeout=30)
        if task.done():
            task.result()
        svc = daemon.services["api"]
        assert isinstance(svc, ApiService)
        await wait_until(lambda: svc.url is not None, timeout=10)
        assert svc.url is not None
        yield daemon, svc.url
    finally:
        daemon.request_stop()
        await task


@contextlib.asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[Supervisor]:
    """Run ``sup`` as a task for the block; cancel and await it after."""
    task = asyncio.create_task(sup.run(), name="test:supervisor")
    try:
        yield sup
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def supervised(driver: Driver, data_dir: Path) -> AsyncIterator[Supervisor]:
    """``driver`` under a running supervisor journaling into ``data_dir`` (default journal
    settings); the supervisor is stopped and the journal closed when the block ends."""
    from daq.clock import SystemClock
    from daq.journal import Journal
    from daq.journal.settings import JournalSection
    from daq.supervisor import Supervisor

    journal = await Journal.open(data_dir, clock=SystemClock(), settings=JournalSection())
    try:
        async with running(Supervisor(driver, journal, SystemClock())) as sup:
            yield sup
    finally:
        await journal.close()
