"""The live alarm stream (``GET /api/alarms/stream``) on the journal's one live-feed mechanism,
over the real API socket: transitions are sent after the commit that stored their
``alarm_events`` rows, each with its row's id; a client that falls behind gets a gap and the
transitions it missed from the journal, none lost and none twice, while the journal never
waits; a client resumes by id; a client whose socket accepts nothing is disconnected."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from daq.alarms.engine import AlarmEngine
from daq.alarms.points import ACTIVE
from daq.alarms.store import transition_of
from daq.cli.alarms import follow_alarms
from daq.clock import SystemClock
from daq.journal import Journal, JournalReader
from daq.journal.feed import RecordBatch
from daq.journal.schema import CHAINED
from daq.model import Quality, Reading
from tests.helpers import wait_until
from tests.test_api import running_daemon
from tests.test_live_feed import api_of, http_get, journal_of, read_lines_until

#: A channel the built-in rule makes an alarm of: non-zero raises it, zero clears it.
CHANNEL = "alarm_door"


def toggle(alarms: AlarmEngine, n: int) -> None:
    """``n`` transitions of the door alarm: each reading flips it (raised, cleared, raised...)."""
    for _ in range(n):
        points = alarms.points.get(("door", CHANNEL), [])
        value = 0.0 if points and points[0].state in ACTIVE else 1.0
        alarms(Reading("door", CHANNEL, value, "", Quality.GOOD, time.time_ns(), time.monotonic_ns()))


def doors(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The door alarm's transitions (whatever else a loaded machine raises meanwhile)."""
    return [o for o in objs if o["type"] == "alarm" and o["instrument"] == "door"]


def alarm_engine(daemon: Any) -> AlarmEngine:
    engine = daemon.alarms
    assert isinstance(engine, AlarmEngine)
    return engine


def head(daemon: Any) -> int:
    """The last committed ``alarm_events`` id."""
    return int(journal_of(daemon).committed_heads()["alarm_events"][0])


async def next_objects(
    resp: aiohttp.ClientResponse, done: Any, timeout: float = 20, into: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Objects of an NDJSON stream (heartbeats left out) until ``done(objects)``, gathered in
    ``into`` if given."""
    out: list[dict[str, Any]] = [] if into is None else into
    async with asyncio.timeout(timeout):
        while not done(out):
            line = await resp.content.readline()
            assert line, "the stream ended"
            obj = json.loads(line)
            if obj["type"] != "heartbeat":
                out.append(obj)
    return out


def rows_on_disk(daemon: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    with JournalReader(journal_of(daemon).data_dir) as reader:
        q = f"SELECT * FROM alarm_events WHERE id IN ({','.join('?' * len(ids))})"
        cur = reader.conn.execute(q, ids)
        cols = [c[0] for c in cur.description]
        return {row[0]: dict(zip(cols, row, strict=True)) for row in cur}


async def test_transitions_are_sent_after_their_commit_with_their_ids(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        alarms = alarm_engine(daemon)
        async with http.get(f"{url}/api/alarms/stream") as resp:
            assert resp.status == 200
            [live] = await next_objects(resp, lambda objs: objs and objs[-1]["type"] == "notice")
            assert (live["message"], live["last_id"]) == ("live", head(daemon))
            toggle(alarms, 3)
            got = await next_objects(resp, lambda objs: len(doors(objs)) == 3)
            # Each was on disk (committed) when it was sent, and the stream's object is its row's.
            ids = [t["event_id"] for t in got]
            on_disk = rows_on_disk(daemon, ids)
        assert ids == list(range(live["last_id"] + 1, live["last_id"] + 1 + len(ids)))
        assert [transition_of(on_disk[i]) for i in ids] == got
        got = doors(got)
        assert [(t["kind"], t["instrument"], t["channel"]) for t in got] == [
            ("raised", "door", CHANNEL),
            ("cleared", "door", CHANNEL),
            ("raised", "door", CHANNEL),
        ]
        # A new client starts with the alarm as it is now, then goes on after the last id.
        async with http.get(f"{url}/api/alarms/stream") as resp:
            first = await next_objects(resp, lambda objs: objs and objs[-1]["type"] == "notice")
        active = [o for o in first if o["type"] == "alarm"]
        assert [(a["kind"], a["id"]) for a in active if a["instrument"] == "door"] == [
            ("active", got[2]["id"])
        ]
        assert first[-1]["last_id"] >= ids[-1]
        # The snapshot's objects have the transitions' keys (all but the row's id).
        assert set(active[0]) | {"event_id"} == set(got[0])
        async with http.get(f"{url}/api/alarms/stream?since_id=x") as resp:
            assert resp.status == 400


async def test_a_stalled_client_gets_every_transition_in_order_through_the_journal(data_dir: Path) -> None:
    api = "client_queue = 100\nclient_write_timeout_s = 30\n"
    async with running_daemon(data_dir, api=api) as (daemon, url, _), aiohttp.ClientSession() as http:
        svc, journal, alarms = api_of(daemon), journal_of(daemon), alarm_engine(daemon)
        port = int(url.rsplit(":", 1)[1])
        feed = journal.record_feed("alarm_events")
        start = head(daemon)
        s = await asyncio.to_thread(http_get, port, "/api/alarms/stream")
        try:
            async with http.get(f"{url}/api/alarms/stream") as fast:
                fast_objs: list[dict[str, Any]] = []
                reader = asyncio.create_task(
                    next_objects(fast, lambda objs: False, timeout=60, into=fast_objs)
                )
                await wait_until(lambda: len(svc.alarm_clients.clients) == 2)
                # The stalled client reads nothing: its socket fills, its subscription
                # overflows into a gap. The journal's commits never wait for it.
                for _ in range(200):
                    if feed.overflows:
                        break
                    toggle(alarms, 60)
                    async with asyncio.timeout(10):
                        await journal.flush()
                    await asyncio.sleep(0)  # the clients' handlers run
                assert feed.overflows >= 1
                assert all(sub.pending <= 100 for sub in svc.alarm_clients.clients)
                toggle(alarms, 5)
                await journal.flush()
                last = head(daemon)
                try:
                    await wait_until(lambda: any(o.get("event_id") == last for o in fast_objs), timeout=30)
                finally:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            objs = await asyncio.to_thread(
                read_lines_until, s, lambda objs: any(o.get("event_id") == last for o in objs)
            )
        finally:
            s.close()
        gaps = [o for o in objs if o["type"] == "gap"]
        assert gaps, "no gap line"
        assert gaps[0]["missed"] == gaps[0]["last_id"] - gaps[0]["after_id"]
        assert "alarm transitions" in gaps[0]["message"]
        stalled = [o for o in objs if o["type"] == "alarm"]
        # Every transition after the start exactly once, in id order: live, then the gap read
        # from the journal, then live again; the same objects the fast client got live.
        assert [t["event_id"] for t in stalled] == list(range(start + 1, last + 1))
        assert stalled == [o for o in fast_objs if o["type"] == "alarm"]
        assert [t["kind"] for t in doors(stalled)[:4]] == ["raised", "cleared", "raised", "cleared"]
        assert svc.alarm_clients.gaps_total >= 1
        assert svc.alarm_clients.dropped_total == 0


async def test_a_client_resumes_after_the_last_id_it_got(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        alarms, journal = alarm_engine(daemon), journal_of(daemon)
        async with http.get(f"{url}/api/alarms/stream") as resp:
            await next_objects(resp, lambda objs: objs and objs[-1]["type"] == "notice")
            toggle(alarms, 2)
            seen = await next_objects(resp, lambda objs: len(doors(objs)) == 2)
        # Away: three transitions are committed meanwhile.
        toggle(alarms, 3)
        await journal.flush()
        missed = head(daemon)
        async with http.get(f"{url}/api/alarms/stream?since_id={seen[-1]['event_id']}") as resp:
            back = await next_objects(resp, lambda objs: objs and objs[-1]["type"] == "notice")
            toggle(alarms, 1)
            [after] = await next_objects(resp, lambda objs: len(objs) == 1)
        # No snapshot: exactly the transitions after that id, then live.
        assert [t["event_id"] for t in back[:-1]] == list(range(seen[-1]["event_id"] + 1, missed + 1))
        assert len(doors(back)) == 3
        assert all(t["type"] == "alarm" and t["kind"] != "active" for t in back[:-1])
        assert (back[-1]["message"], back[-1]["last_id"]) == ("live", missed)
        assert after["event_id"] == missed + 1
        # An id this journal never reached (another journal's): said so, then the alarms as
        # they are now.
        async with http.get(f"{url}/api/alarms/stream?since_id=99999999") as resp:
            objs = await next_objects(resp, lambda objs: objs and objs[-1].get("message") == "live")
        assert "since_id 99999999 is past this journal's last alarm event" in objs[0]["message"]
        assert [a["kind"] for a in objs[1:-1]] == ["active"] * (len(objs) - 2)
        assert any(a["id"] == after["id"] for a in objs[1:-1])


async def test_a_client_whose_socket_accepts_nothing_is_disconnected(data_dir: Path) -> None:
    api = "client_queue = 100\nclient_write_timeout_s = 0.5\n"
    async with running_daemon(data_dir, api=api) as (daemon, url, _):
        svc, journal, alarms = api_of(daemon), journal_of(daemon), alarm_engine(daemon)
        port = int(url.rsplit(":", 1)[1])
        s = await asyncio.to_thread(http_get, port, "/api/alarms/stream")
        try:
            await wait_until(lambda: len(svc.alarm_clients.clients) == 1)
            for _ in range(200):
                if svc.alarm_clients.dropped_total:
                    break
                toggle(alarms, 60)
                await journal.flush()
            await wait_until(lambda: svc.alarm_clients.dropped_total == 1)
            assert not svc.alarm_clients.clients
            assert not journal.record_feed("alarm_events").subscriptions
        finally:
            s.close()


async def test_the_feed_gives_stored_ids_when_the_writer_refuses_a_row(data_dir: Path) -> None:
    journal = await Journal.open(data_dir, clock=SystemClock())
    sub = journal.record_feed("alarm_events").subscribe(100, "test")

    def row(alarm_id: Any) -> dict[str, Any]:
        return {
            "alarm_id": alarm_id, "kind": "raised", "ts_ns": 1, "mono_ns": 1, "instrument": "door",
            "channel": CHANNEL, "condition": "ON", "severity": "high", "state": "unacknowledged active",
            "actor": "daemon", "comment": None, "run_id": None, "detail": None,
        }  # fmt: skip

    try:
        journal.record("alarm_events", row("a"))
        journal.record("alarm_events", row(["not", "a", "column"]))  # refused: a rejected_record event
        journal.record("alarm_events", row("c"))
        await journal.flush()
        [batch] = sub.take()
        assert isinstance(batch, RecordBatch)
        with JournalReader(data_dir) as reader:
            stored = reader.conn.execute(
                f"SELECT {', '.join(CHAINED['alarm_events'])} FROM alarm_events"
            ).fetchall()
        assert (batch.first_id, batch.last_id) == (1, 2)
        assert batch.rows == stored
        assert journal.rejected == 1
    finally:
        sub.close()
        await journal.close()


async def test_tail_alarms_resumes_by_id_after_the_connection_is_lost(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _):
        svc, journal, alarms = api_of(daemon), journal_of(daemon), alarm_engine(daemon)
        out, err = io.StringIO(), io.StringIO()
        deadline = time.monotonic() + 4.0
        tail = asyncio.create_task(
            asyncio.to_thread(follow_alarms, url, out, as_json=True, deadline=deadline, err=err)
        )
        try:
            await wait_until(lambda: len(svc.alarm_clients.clients) == 1)
            toggle(alarms, 2)
            await wait_until(lambda: out.getvalue().count("\n") >= 2)
            for sub in list(svc.alarm_clients.clients):
                svc.alarm_clients.drop(sub, "test: the connection is lost")
            toggle(alarms, 3)  # committed while tail is away
            await journal.flush()
            last = head(daemon)
            await wait_until(lambda: f'"event_id":{last}' in out.getvalue(), timeout=10)
        finally:
            await tail
        assert "reconnected" in err.getvalue()
        shown = [json.loads(line) for line in out.getvalue().splitlines()]
        # No snapshot on the resumed connection: only transitions, each once, in id order.
        ids = [t["event_id"] for t in shown]
        assert ids == list(range(ids[0], last + 1))
        assert len(doors(shown)) == 5


def test_a_row_written_before_detail_held_the_times_gives_its_own() -> None:
    """Rows journaled before ``detail`` held the alarm's times (value, setpoint, unit and
    message only) still read as transitions: their own time and actor, nothing invented."""
    base = {
        "id": 7, "alarm_id": "3f9c2a71b0de", "ts_ns": 1_000, "mono_ns": 5, "instrument": "synth",
        "channel": "p", "condition": "H", "severity": "high", "run_id": None,
    }  # fmt: skip
    detail = json.dumps({"message": "p high", "setpoint": 2.0, "unit": "Pa", "value": 3.0})
    raised = transition_of({**base, "kind": "raised", "state": "unacknowledged active",
                            "actor": "daemon", "comment": None, "detail": detail})  # fmt: skip
    assert (raised["raised_ns"], raised["acked_ns"], raised["cleared_ns"]) == (1_000, None, None)
    assert (raised["value"], raised["setpoint"], raised["unit"], raised["event_id"]) == (3.0, 2.0, "Pa", 7)
    acked = transition_of({**base, "kind": "acknowledged", "state": "acknowledged active",
                           "actor": "ann", "comment": "seen", "detail": None})  # fmt: skip
    assert (acked["raised_ns"], acked["acked_ns"], acked["acked_by"]) == (None, 1_000, "ann")
    assert (acked["comment"], acked["active"], acked["acknowledged"]) == ("seen", True, True)
