"""The one live feed (daq.journal.feed) and its overflow contract, over the real API socket: a
client that falls behind gets a gap marker naming journal ids, then those readings from the
journal, then live ones, none missing and none twice; clients resume by journal id
(``since_id``, ``Last-Event-ID``), never by acquisition time; ``/api/readings`` pages by id."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from daq.api.filters import ReadingFilter
from daq.api.server import ApiService
from daq.cli.tail import Printer, follow
from daq.journal import Journal, JournalReader
from daq.journal.feed import Feed, FeedBatch, Gap
from daq.model import Quality, Reading
from tests.helpers import wait_until
from tests.test_api import running_daemon


def reading(instrument: str = "dc1", acq_ns: int | None = None) -> Reading:
    now = time.time_ns()
    return Reading(instrument, "activity", 1.0, "Bq", Quality.GOOD, acq_ns or now, time.monotonic_ns())


def api_of(daemon: Any) -> ApiService:
    svc = daemon.services["api"]
    assert isinstance(svc, ApiService)
    return svc


def journal_of(daemon: Any) -> Journal:
    journal = daemon.journal
    assert isinstance(journal, Journal)
    return journal


async def test_feed_gap_grows_until_taken_and_close_wakes_the_consumer() -> None:
    feed = Feed()
    sub = feed.subscribe(5, "test")
    feed.publish(1, [reading()] * 3, [1, 2, 3])
    feed.publish(4, [reading()] * 3, [4, 5, 6])  # 6 > 5: both batches become a gap
    feed.publish(7, [reading()] * 3, [7, 8, 9])
    feed.publish(10, [reading()] * 3, [10, 11, 12])  # 6 > 5 again: the same gap grows
    (gap,) = sub.take()
    assert gap == Gap(after_id=0, last_id=12, missed=12)
    feed.publish(13, [reading()] * 2, [13, 14])
    (batch,) = sub.take()
    assert isinstance(batch, FeedBatch)
    assert (batch.first_id, batch.last_id) == (13, 14)
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    feed.close()
    assert await asyncio.wait_for(waiter, 1) == []
    assert sub.closed
    assert not feed.subscriptions
    assert feed.subscribe(5, "late").closed


def http_get(port: int, target: str) -> socket.socket:
    """An HTTP/1.0 request (the answer is the raw body, not chunked) from a socket with a tiny
    receive window, so that not reading soon stalls the server's writes."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s


def read_lines_until(s: socket.socket, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Read the NDJSON body until ``done(objects)``."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head[:100]
    objs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        *lines, body = body.split(b"\n")
        objs.extend(json.loads(line) for line in lines if line)
        if done(objs):
            return objs
        chunk = s.recv(65536)
        assert chunk, "the server closed the stream"
        body += chunk
    raise AssertionError(f"stream incomplete after {timeout} s: {len(objs)} lines")


async def test_a_client_that_falls_behind_gets_a_gap_then_every_reading_by_id(data_dir: Path) -> None:
    api = "client_queue = 100\nclient_write_timeout_s = 20\n"
    async with running_daemon(data_dir, interval_s=0.001, api=api) as (daemon, url, _):
        svc, journal = api_of(daemon), journal_of(daemon)
        port = int(url.rsplit(":", 1)[1])
        await wait_until(lambda: daemon.supervisor("dc1").readings > 50)
        await journal.flush()
        start_id = journal.last_reading_id
        s = await asyncio.to_thread(http_get, port, f"/api/stream?format=ndjson&since_id={start_id}")
        try:
            # Not reading: the socket fills, the subscription overflows into a gap.
            await wait_until(lambda: journal.feed.overflows >= 1, timeout=30)
            await journal.flush()
            target = journal.last_reading_id + 200
            objs = await asyncio.to_thread(
                read_lines_until,
                s,
                lambda objs: any(o.get("id", 0) >= target for o in objs if o["type"] == "reading"),
            )
        finally:
            s.close()
        gaps = [o for o in objs if o["type"] == "gap"]
        assert gaps, "no gap marker"
        assert gaps[0]["after_id"] >= start_id
        assert gaps[0]["last_id"] > gaps[0]["after_id"]
        assert gaps[0]["missed"] == gaps[0]["last_id"] - gaps[0]["after_id"]
        assert svc.live.gaps_total >= 1
        ids = [o["id"] for o in objs if o["type"] == "reading"]
        # Every reading after start_id exactly once, in id order: live, the gap from the
        # journal, live again.
        assert ids == list(range(start_id + 1, start_id + 1 + len(ids))), "a reading missing or twice"
        with JournalReader(data_dir) as r:
            journaled = {x["id"]: x["seq"] for x in r.readings()}
        by_id = {o["id"]: o["seq"] for o in objs if o["type"] == "reading"}
        assert all(journaled[i] == seq for i, seq in by_id.items())
        assert svc.live.dropped_total == 0


async def test_tail_resumes_by_journal_id_not_by_acquisition_time(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _):
        svc, journal = api_of(daemon), journal_of(daemon)
        out, err = io.StringIO(), io.StringIO()
        printer = Printer(out, as_json=True, colour=False)
        deadline = time.monotonic() + 4.0
        tail = asyncio.create_task(
            asyncio.to_thread(follow, url, ReadingFilter(), None, printer, deadline=deadline, err=err)
        )
        try:
            await wait_until(lambda: len(svc.live.clients) == 1 and out.getvalue().count("\n") >= 3)
            for sub in list(svc.live.clients):
                svc.live.drop(sub, "test: the connection is lost")
            # Committed while tail is away, acquired an hour before what it showed last: a
            # resume by acquisition time would never show it; a resume by journal id does.
            journal.append(reading("late", acq_ns=time.time_ns() - 3600 * 10**9))
            await journal.flush()
            await wait_until(lambda: '"instrument":"late"' in out.getvalue(), timeout=10)
        finally:
            await tail
        assert "retrying" in err.getvalue()
        assert "reconnected" in err.getvalue()
        shown = [json.loads(line) for line in out.getvalue().splitlines()]
        ids = [r["id"] for r in shown]
        assert ids == sorted(set(ids)), "a reading shown twice or out of order"
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a reading committed meanwhile not shown"


async def test_sse_carries_ids_and_a_reconnect_resumes_after_last_event_id(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 5)

        async def events(headers: dict[str, str], n: int) -> list[tuple[int, list[dict[str, Any]]]]:
            got: list[tuple[int, list[dict[str, Any]]]] = []
            async with http.get(f"{url}/api/stream?format=sse", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                event, eid = None, None
                async with asyncio.timeout(20):
                    while len(got) < n:
                        line = (await resp.content.readline()).decode().rstrip("\n")
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("id: "):
                            eid = int(line[4:])
                        elif line.startswith("data: ") and event == "readings":
                            assert eid is not None
                            got.append((eid, json.loads(line[6:])))
            return got

        first = await events({}, 2)
        for eid, readings in first:
            assert eid == readings[-1]["id"]
        last = first[-1][0]
        again = await events({"Last-Event-ID": str(last)}, 1)
        assert again[0][1][0]["id"] == last + 1
        # An id past this journal's last (another journal's): said so, then live from here.
        async with http.get(f"{url}/api/stream?format=sse", headers={"Last-Event-ID": "99999999"}) as resp:
            async with asyncio.timeout(20):
                head = [(await resp.content.readline()).decode() for _ in range(8)]
        assert any("since_id 99999999 is past this journal's last id" in line for line in head), head
        resumed = await events({"Last-Event-ID": "99999999"}, 1)
        assert resumed[0][1][0]["id"] > last
        async with http.get(f"{url}/api/stream", headers={"Last-Event-ID": "x"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"].startswith("Last-Event-ID: expected a journal id")


async def test_readings_page_by_journal_id(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        journal = journal_of(daemon)
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 12)
        # Committed after the others, acquired an hour earlier: paging by id finds it in its
        # commit place; paging by time would put it before everything.
        journal.append(reading("late", acq_ns=time.time_ns() - 3600 * 10**9))
        await journal.flush()
        with JournalReader(data_dir) as r:
            journaled = [x["id"] for x in r.readings()]
        pages: list[list[dict[str, Any]]] = []
        since_id = 0
        while True:
            async with http.get(f"{url}/api/readings", params={"since_id": since_id, "limit": 5}) as resp:
                assert resp.status == 200
                body = await resp.json()
            pages.append(body["readings"])
            since_id = body["last_id"]
            if not body["truncated"]:
                break
        ids = [r["id"] for page in pages for r in page]
        assert ids[: len(journaled)] == journaled, "paging by id skipped or repeated a reading"
        assert all(len(page) == 5 for page in pages[:-1])
        assert "late" in {r["instrument"] for page in pages for r in page}
        # The filter applies while paging; last_id still moves on past what it left out.
        async with http.get(f"{url}/api/readings", params={"since_id": 0, "instrument": "late"}) as resp:
            body = await resp.json()
        assert [r["instrument"] for r in body["readings"]] == ["late"]
        assert body["last_id"] >= journaled[-1]
        for bad, says in (
            ("-1", "since_id: -1 is out of range"),
            ("abc", "since_id: expected a journal id"),
            ("1e3", "since_id: expected a journal id"),
            (str(2**63), "since_id: 9223372036854775808 is out of range"),
        ):
            async with http.get(f"{url}/api/readings", params={"since_id": bad}) as resp:
                assert resp.status == 400, bad
                error = (await resp.json())["error"]
                assert error.startswith(says), error
                assert "\n" not in error
