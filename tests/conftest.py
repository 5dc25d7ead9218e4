"""Shared fixtures. Every test fails if it leaves asyncio tasks or threads running."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import structlog
from hypothesis import HealthCheck, settings

from daq.logs import CHATTY_LIBRARIES
from simulators import synth_opcua
from tests import opcua_peer_server
from tests.helpers import free_port, refused_port

# "ci" is the default; "long" is the fuzzing profile of bench/fuzz.py (>= 100,000 examples).
settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# OPC UA simulators (in this process and in the subprocesses it starts) load the standard
# address space from one shelf instead of building it, about 2.3 s of CPU less per server.
os.environ.setdefault(synth_opcua.CACHE_ENV, str(Path(sys.prefix) / "sim-cache"))


_RUN_PEERS: list[opcua_peer_server.Peer] = []
_CACHE_BUILDERS: list[subprocess.Popen[bytes]] = []


def pytest_configure(config: pytest.Config) -> None:
    """The xdist controller starts the run's shared OPC UA peer (tests/opcua_peer_server.py)
    before its workers exist, so they inherit its address and it starts only once.

    In a fresh checkout it also starts building the OPC UA simulators' address-space cache in a
    process of its own, while the workers start and collect: their first servers then wait
    for it (a file lock) a moment at most, instead of for a build made on a loaded machine."""
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not workers:
        return
    if not synth_opcua.cache_is_built():
        code = "import asyncio; from simulators import synth_opcua; asyncio.run(synth_opcua.build_cache())"
        _CACHE_BUILDERS.append(subprocess.Popen([sys.executable, "-c", code], cwd=config.rootpath))
    if not opcua_peer_server.selected(list(config.args), config.rootpath):
        return
    workdir = Path(tempfile.mkdtemp(prefix="daq-opcua-peer-"))
    try:
        _RUN_PEERS.append(opcua_peer_server.start_for_run(workdir, free_port()))
    except opcua_peer_server.PeerError:
        shutil.rmtree(workdir, ignore_errors=True)  # the peer tests try their own and fail with the reason


def pytest_unconfigure(config: pytest.Config) -> None:
    while _CACHE_BUILDERS:
        builder = _CACHE_BUILDERS.pop()
        try:
            builder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            builder.kill()
            builder.wait()
    while _RUN_PEERS:
        peer = _RUN_PEERS.pop()
        peer.stop()
        shutil.rmtree(peer.log.parent, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (several seconds each: daemons, simulators and servers as processes)
    run first, the rest keep their order. The workers take one test at a time
    (``--maxschedchunk=1`` in pyproject.toml), so the long tests start together at the beginning and
    the short ones fill in around them: the workers finish at about the same time instead of one
    running a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_THREADS_AFTER_SETUP = pytest.StashKey[set[threading.Thread]]()


class _ModuleThreads:
    """The threads alive before the first test of the current test module was set up."""

    path: ClassVar[object] = None
    before: ClassVar[set[threading.Thread]] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if _ModuleThreads.path != item.path:
        _ModuleThreads.path, _ModuleThreads.before = item.path, set(threading.enumerate())
    try:
        return (yield)
    finally:
        item.stash[_THREADS_AFTER_SETUP] = set(threading.enumerate())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test fails if threads are left running: a journal writer, a sink thread or a server
    thread left behind keeps files and ports busy and slows or breaks later tests.

    Threads a test started while it ran must be gone after its teardown (every fixture's,
    the event loop's included: the loop's default executor threads end when it closes).
    Fixtures shared by a module (a server, a module-scoped event loop) end with the module:
    after the module's last test, every thread started since its first must be gone.
    A test in a module-scoped event loop may be the first to use that loop's default
    executor; its threads (``asyncio_N``) belong to the loop and are checked with the module.
    Threads get a second to finish what they were told to stop doing."""
    result = yield
    module_ended = nextitem is None or nextitem.path != item.path
    before = _ModuleThreads.before if module_ended else item.stash.get(_THREADS_AFTER_SETUP, set())
    marker = item.get_closest_marker("asyncio")
    shared_loop = (
        not module_ended and marker is not None and marker.kwargs.get("loop_scope", "function") != "function"
    )
    deadline = time.monotonic() + 1.0
    while True:
        leftover = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not (shared_loop and t.name.startswith("asyncio_"))
        ]
        if not leftover or time.monotonic() > deadline:
            break
        leftover[0].join(timeout=0.05)
    if leftover:
        where = "test module" if module_ended else "test"
        pytest.fail(f"{where} leaked threads: {', '.join(sorted(t.name for t in leftover))}")
    return result


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that configures logging (a command's ``main()`` run in-process does) leaves it as
    it found it. Whatever order the tests run in, a later test that captures info events with
    ``structlog.testing.capture_logs`` must not lose them to a level filter an earlier one set."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, library_level in libraries.items():
        logging.getLogger(name).setLevel(library_level)


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    for _ in range(20):
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leftover:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(sorted(t.get_name() for t in leftover))
    for t in leftover:
        t.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)
    pytest.fail(f"test leaked asyncio tasks: {names}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection for the whole test (see
    ``tests.helpers.refused_port``)."""
    with refused_port() as port:
        yield port
