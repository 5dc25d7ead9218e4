"""The one backoff: doubling, capped, jitter only downwards, stepped on the injected clock;
and its users outside the supervisor (``daq tail``, ``daq tail --alarms``, the API's accept
loop) stepped the same way."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import random
import resource
import socket

import pytest
from aiohttp import web

from daq.api.filters import ReadingFilter
from daq.api.listener import Listener, listening_socket
from daq.backoff import JITTER, Backoff, backoff_delay
from daq.cli import following
from daq.cli.alarms import follow_alarms
from daq.cli.tail import Printer, follow
from daq.clock import ManualClock


def test_delays_double_to_the_cap_and_jitter_only_shortens() -> None:
    rng = random.Random(7)
    for attempt in range(1, 15):
        exact = min(5.0, 0.2 * 2 ** (attempt - 1))
        assert backoff_delay(attempt, 0.2, 5.0) == pytest.approx(exact)
        jittered = backoff_delay(attempt, 0.2, 5.0, rng)
        assert exact * (1 - JITTER) <= jittered <= exact


def test_reset_starts_again_and_exact_mode_has_no_jitter() -> None:
    b = Backoff(0.5, 4.0, jitter=False)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s <= cap_s"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


async def test_wait_sleeps_on_the_injected_clock() -> None:
    clock = ManualClock()
    start = clock.monotonic_ns()
    b = Backoff(1.0, 8.0, jitter=False)
    slept = [await b.wait(clock) for _ in range(4)]
    assert slept == [1.0, 2.0, 4.0, 8.0]
    assert clock.monotonic_ns() - start == 15_000_000_000


class SleepLog(ManualClock):
    """A manual clock that writes down every sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    def pause(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


def _assert_backoff(delays: list[float], initial_s: float, cap_s: float) -> None:
    assert delays
    for attempt, delay in enumerate(delays, 1):
        exact = backoff_delay(attempt, initial_s, cap_s)
        assert exact * (1 - JITTER) <= delay <= exact, (attempt, delays)


@pytest.mark.parametrize("alarms", [False, True])
def test_tail_backs_off_on_the_injected_clock_while_no_daemon_answers(alarms: bool, dead_port: int) -> None:
    clock = SleepLog()
    err, out = io.StringIO(), io.StringIO()
    api = f"http://127.0.0.1:{dead_port}"  # nothing listens: every connection is refused
    deadline = clock.monotonic_ns() / 1e9 + 60.0
    if alarms:
        follow_alarms(api, out, as_json=True, deadline=deadline, err=err, clock=clock, pause=clock.pause)
    else:
        printer = Printer(out, as_json=True)
        flt = ReadingFilter.from_params([], [], [])
        follow(api, flt, None, printer, deadline=deadline, err=err, clock=clock, pause=clock.pause)
    # Doubling from 0.5 s to the 5 s cap until the deadline. The waits end at the deadline, or
    # (by the jitter) less than the slack before it, where a lost connection ends the command.
    _assert_backoff(clock.slept[:-1], following.BACKOFF_INITIAL_S, following.BACKOFF_CAP_S)
    assert clock.slept[-1] <= following.BACKOFF_CAP_S
    assert 60.0 - following.DEADLINE_SLACK_S <= sum(clock.slept) <= 60.0 + 1e-6, clock.slept
    assert len(clock.slept) >= 12
    assert err.getvalue().count("retrying") == 1, err.getvalue()
    assert out.getvalue() == ""


def _open_all(fds: list[int]) -> None:
    """Open descriptors until there are none left (EMFILE)."""
    while True:
        try:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return


async def test_api_accept_backs_off_on_the_injected_clock_when_out_of_descriptors() -> None:
    clock = SleepLog()
    runner = web.AppRunner(web.Application())
    await runner.setup()
    server = runner.server
    assert server is not None
    listener = Listener(
        server, listening_socket("127.0.0.1", 0), max_connections=8, header_timeout_s=30, clock=clock
    )
    client = socket.create_connection(("127.0.0.1", listener.port))  # queued by the kernel
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog: list[int] = []
    accepting: asyncio.Task[None] | None = None
    try:
        # Descriptors run out: every accept() fails with EMFILE until they are given back. The
        # collector stays off meanwhile: a socket an earlier test left to it, closed mid-way,
        # would give back a descriptor, and the queued connection would be accepted early (once
        # seen in a fresh-clone run: one failure, then nothing left to fail on).
        gc.disable()
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
        _open_all(hog)
        accepting = asyncio.create_task(listener.run())
        async with asyncio.timeout(10):
            while listener.accept_failures < 10:
                await asyncio.sleep(0)
            for fd in hog:
                os.close(fd)
            hog.clear()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            while listener.accepted < 1:
                await asyncio.sleep(0)
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        gc.enable()
        if accepting is not None:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
        client.close()
        listener.close()
        await runner.cleanup()
    # From 50 ms doubling to 1 s, slept on the injected clock (no real time passed).
    _assert_backoff(clock.slept, 0.05, 1.0)
    assert len(clock.slept) == listener.accept_failures >= 10
    assert listener.status()["accepted"] == 1
