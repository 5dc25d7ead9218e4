"""Shared fixtures. Every test fails if it leaves asyncio tasks or threads running."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "ci" is the default; "long" is the fuzzing profile of bench/fuzz.py (>= 100,000 examples).
settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_THREADS_BEFORE = pytest.StashKey[set[threading.Thread]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_THREADS_BEFORE] = set(threading.enumerate())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Every test fails if threads it started are still running after its teardown (a journal
    writer, a sink thread or a server thread left behind keeps files and ports busy and would
    slow or break later tests). Checked after every fixture's teardown, the event loop's
    included: the loop's default executor threads end when the loop closes. Threads get a
    second to finish what they were told to stop doing."""
    result = yield
    before = item.stash.get(_THREADS_BEFORE, set())
    deadline = time.monotonic() + 1.0
    while True:
        leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leftover or time.monotonic() > deadline:
            break
        leftover[0].join(timeout=0.05)
    if leftover:
        pytest.fail(f"test leaked threads: {', '.join(sorted(t.name for t in leftover))}")
    return result


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
