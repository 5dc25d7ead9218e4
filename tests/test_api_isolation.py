"""A stalled live client (connected, never reading) does not slow acquisition or the journal:
its subscription of the live feed overflows into a gap (holding nothing), its socket is
dropped once it accepts nothing for ``client_write_timeout_s``, and a client that reads keeps
getting every reading."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from daq.api.server import ApiService
from daq.daemon import Daemon
from tests.helpers import wait_until
from tests.test_api import running_daemon


def rates(daemon: Daemon) -> tuple[float, int, int]:
    j = daemon.journal
    assert j is not None
    return time.monotonic(), daemon.supervisor("dc1").readings, j.commits


async def measure(daemon: Daemon, seconds: float) -> tuple[float, float]:
    """Readings acquired per second and journal commits per second over ``seconds``."""
    t0, r0, c0 = rates(daemon)
    await asyncio.sleep(seconds)
    t1, r1, c1 = rates(daemon)
    return (r1 - r0) / (t1 - t0), (c1 - c0) / (t1 - t0)


def stalled_client(port: int) -> socket.socket:
    """Asks for the stream, then never reads; a tiny receive window fills at once."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/stream?format=ndjson HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return s


def closed_by_server(s: socket.socket, timeout: float = 30) -> bool:
    """Drain what the kernel holds; True once the server has closed (EOF or reset)."""
    s.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not s.recv(1 << 20):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            continue
    return False


@pytest.mark.slow
async def test_stalled_client_is_dropped_and_acquisition_unaffected(data_dir: Path) -> None:
    api = "client_queue = 100\nclient_write_timeout_s = 4\n"
    async with running_daemon(data_dir, interval_s=0.001, api=api) as (daemon, url, _):
        svc = daemon.services["api"]
        assert isinstance(svc, ApiService)
        port = int(url.rsplit(":", 1)[1])
        await wait_until(lambda: daemon.supervisor("dc1").readings > 500, timeout=30)
        received: list[int] = []

        async def reader() -> None:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/api/stream") as resp:
                async for line in resp.content:
                    obj = json.loads(line)
                    if obj["type"] == "reading":
                        received.append(obj["seq"])

        journal = daemon.journal
        assert journal is not None
        reading_client = asyncio.create_task(reader(), name="reading-client")
        try:
            await wait_until(lambda: len(svc.live.clients) == 1)
            base_rate, base_commits = await measure(daemon, 3.0)
            assert base_rate > 100, base_rate

            stalled = await asyncio.to_thread(stalled_client, port)
            try:
                await wait_until(lambda: len(svc.live.clients) == 2)
                before = len(received)
                stall_rate, stall_commits = await measure(daemon, 3.0)
                # Far more than client_queue readings were committed meanwhile: the stalled
                # client's subscription overflowed into a gap instead of growing.
                assert journal.feed.overflows >= 1
                assert all(sub.pending <= 100 for sub in svc.live.clients)
                await wait_until(lambda: svc.live.dropped_total == 1, timeout=30)
                assert await asyncio.to_thread(closed_by_server, stalled)
            finally:
                stalled.close()
            after_rate, _ = await measure(daemon, 1.0)
            assert len(svc.live.clients) == 1  # the reading client stays
        finally:
            reading_client.cancel()
            await asyncio.gather(reading_client, return_exceptions=True)
        print(
            f"readings/s: {base_rate:.0f} before, {stall_rate:.0f} while stalled, {after_rate:.0f} after; "
            f"commits/s {base_commits:.1f} / {stall_commits:.1f}; lag max {svc.lag.max_s * 1000:.1f} ms"
        )
        # Generous bounds (a shared 2-core machine): a stall that slowed the pipeline would
        # stop it, since the stalled socket never drains.
        assert stall_rate > 0.5 * base_rate
        assert stall_commits > 0.5 * base_commits
        assert journal.overflowed == 0
        assert journal.pending < 5000
        # The reading client got readings during the stall, without a gap in sequence numbers.
        assert len(received) > before
        assert received == list(range(received[0], received[0] + len(received)))
