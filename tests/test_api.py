"""The local API against a real daemon and a real simulator over TCP: status, metrics, health,
readings, the live stream with its filters and replay, run control and its token, config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daq.api.filters import ReadingFilter, parse_duration
from daq.api.server import ApiService
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.errors import ConfigError
from daq.journal import JournalReader
from daq.status import compute_alarms, extract_sinks
from simulators.base import Listener
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import api_daemon, config_text, make_config, refused_port, wait_until

TOKEN = "s3cret-token-for-tests"


@contextlib.asynccontextmanager
async def running_daemon(
    data_dir: Path,
    *,
    interval_s: float = 0.05,
    api: str = "",
    dead_instrument: bool = False,
    faults: dict[str, float] | None = None,
) -> AsyncIterator[tuple[Daemon, str, Listener]]:
    """A daemon on a VDC-404 simulator (``dc1``), optionally with an instrument on a port
    nobody listens on (``dead``), and the API on a free port. Yields (daemon, base URL, sim)."""
    sim = await Vdc404Simulator(
        options={"interval_s": str(interval_s), "nuclide": "F-18"}, faults=faults or {}
    ).serve("tcp://127.0.0.1:0")
    try:
        with refused_port() as dead_port:
            instruments: list[dict[str, Any]] = [
                {"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url, "stale_after_s": 2.0,
                 "backoff_initial_s": 0.1, "backoff_cap_s": 0.5},
            ]  # fmt: skip
            if dead_instrument:
                instruments.append(
                    {"name": "dead", "kind": "veenstra-vdc404", "port": f"socket://127.0.0.1:{dead_port}",
                     "backoff_initial_s": 0.2, "backoff_cap_s": 0.5, "connect_timeout_s": 1.0},
                )  # fmt: skip
            cfg = make_config(
                data_dir,
                instruments,
                "[api]\nport = 0\n" + api,
                daemon={"site": "test-site", "cell": "test-cell"},
            )
            async with api_daemon(cfg) as (daemon, url):
                yield daemon, url, sim
    finally:
        await sim.close()


async def ndjson_lines(resp: aiohttp.ClientResponse, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Read ``n`` reading lines (skipping heartbeats and notices)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            line = await resp.content.readline()
            assert line, "stream ended early"
            obj = json.loads(line)
            if obj["type"] == "reading":
                out.append(obj)
    return out


async def test_status_health_and_metrics(data_dir: Path) -> None:
    async with (
        running_daemon(data_dir, dead_instrument=True) as (daemon, url, _),
        aiohttp.ClientSession() as http,
    ):
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 5)
        await wait_until(lambda: daemon.supervisor("dead").last_error is not None)
        await daemon.journal.flush()  # type: ignore[union-attr]
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["ok"] is True
        async with http.get(f"{url}/api/status") as resp:
            assert resp.status == 200
            st = await resp.json()
        dc1 = st["instruments"]["dc1"]
        assert dc1["state"] == "connected"
        act = dc1["channels"]["activity"]
        assert act["unit"] == "Bq"
        assert act["quality"] == "GOOD"
        assert act["value"] > 0
        assert 0 <= act["age_s"] < 5
        assert dc1["last_value_age_s"] is not None
        assert st["instruments"]["dead"]["state"] != "connected"
        assert st["journal"]["size_bytes"] > 0
        assert st["journal"]["readings_committed"] > 0
        assert any(a["subject"] == "dead" and a["severity"] == "alarm" for a in st["alarms"])
        assert st["services"]["api"]["url"] == url
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
    families = check_exposition(text)
    for name in ("daq_readings_total", "daq_parse_errors_total", "daq_reconnects_total",
                 "daq_journal_commit_seconds", "daq_sink_backlog", "daq_event_loop_lag_seconds",
                 "daq_instrument_up", "daq_api_stream_dropped_total"):  # fmt: skip
        assert name in families, name
    good = re.search(r'^daq_readings_total\{instrument="dc1",quality="GOOD"\} (\d+)$', text, re.M)
    assert good
    assert int(good.group(1)) >= 5
    assert re.search(r'^daq_readings_total\{instrument="dead",quality="BAD"\} [1-9]', text, re.M)
    assert re.search(r'^daq_instrument_up\{instrument="dead",kind="veenstra-vdc404"\} 0$', text, re.M)
    count = re.search(r"^daq_journal_commit_seconds_count (\d+)$", text, re.M)
    assert count
    assert int(count.group(1)) > 0


def check_exposition(text: str) -> set[str]:
    """Every line is a comment or a well-formed sample of a declared family; returns them."""
    declared: dict[str, str] = {}
    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
    )
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in {"counter", "gauge", "histogram"}
            declared[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = sample.match(line)
        assert m, f"bad exposition line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in declared else name
        assert base in declared, f"sample of undeclared family: {line!r}"
        float(m.group(4))
    assert text.endswith("\n")
    return set(declared)


async def test_stream_ndjson_filters_replay_and_no_duplicates(data_dir: Path) -> None:
    async with (
        running_daemon(data_dir, dead_instrument=True) as (daemon, url, _),
        aiohttp.ClientSession() as http,
    ):
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 20)
        await daemon.journal.flush()  # type: ignore[union-attr]
        with JournalReader(data_dir) as r:
            before = [x for x in r.readings() if x["instrument"] == "dc1"]
        # Replay of the last minute then live: every dc1 reading once, in order.
        async with http.get(f"{url}/api/stream", params={"instrument": "dc1", "since": "1m"}) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/x-ndjson"
            got = await ndjson_lines(resp, len(before) + 10)
        seqs = [g["seq"] for g in got]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate in replay + live"
        assert seqs[0] <= before[0]["seq"]
        assert {g["instrument"] for g in got} == {"dc1"}
        assert got[0]["quality"] == "GOOD"
        assert got[0]["unit"] == "Bq"
        assert got[0]["attrs"]["nuclide"] == "F-18"
        # Quality filter: only the BAD gap records of the dead instrument.
        async with http.get(f"{url}/api/stream", params={"quality": "bad"}) as resp:
            bad = await ndjson_lines(resp, 2)
        assert {b["quality"] for b in bad} == {"BAD"}
        assert {b["instrument"] for b in bad} == {"dead"}
        assert all(b["value"] is None and b["reason"] for b in bad)
        # Channel glob.
        async with http.get(f"{url}/api/stream", params={"channel": "act*", "instrument": "dc1"}) as resp:
            assert {g["channel"] for g in await ndjson_lines(resp, 3)} == {"activity"}
        async with http.get(f"{url}/api/stream", params={"channel": "nothing*", "since": "1m"}) as resp:
            # Nothing matches: only heartbeats and notices arrive.
            line = json.loads(await resp.content.readline())
            assert line["type"] == "notice"
            assert line["replayed"] == 0
        async with http.get(f"{url}/api/stream", params={"quality": "perfect"}) as resp:
            assert resp.status == 400
            assert "unknown quality 'perfect'" in (await resp.json())["error"]


async def test_stream_resumes_after_a_journal_id(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 20)
        await daemon.journal.flush()  # type: ignore[union-attr]
        with JournalReader(data_dir) as r:
            before = list(r.readings())
        since_id = before[len(before) // 2]["id"]
        # Replay after that id, then live: every reading once, by id, none before it.
        async with http.get(f"{url}/api/stream", params={"since_id": str(since_id)}) as resp:
            assert resp.status == 200
            got = await ndjson_lines(resp, len(before) - len(before) // 2 + 10)
        ids = [g["id"] for g in got]
        assert ids == list(range(since_id + 1, since_id + 1 + len(ids))), "gap or duplicate by id"
        # The ids a client sees are the journal's.
        with JournalReader(data_dir) as r:
            journaled = {x["id"]: x["seq"] for x in r.readings()}
        assert all(journaled[g["id"]] == g["seq"] for g in got)
        async with http.get(f"{url}/api/stream", params={"since_id": "-1"}) as resp:
            assert resp.status == 400
            assert "since_id" in (await resp.json())["error"]


async def test_stream_sse(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (_, url, _), aiohttp.ClientSession() as http:
        headers = {"Accept": "text/event-stream"}
        async with http.get(f"{url}/api/stream", headers=headers, params={"since": "1m"}) as resp:
            assert resp.content_type == "text/event-stream"
            events: list[list[dict[str, Any]]] = []
            event = None
            async with asyncio.timeout(20):
                while sum(len(e) for e in events) < 5:
                    line = (await resp.content.readline()).decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "readings":
                        events.append(json.loads(line[6:]))
        readings = [r for e in events for r in e]
        assert all(r["instrument"] == "dc1" and r["type"] == "reading" for r in readings)


async def test_readings_endpoint(data_dir: Path) -> None:
    async with running_daemon(data_dir) as (daemon, url, _), aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 10)
        await daemon.journal.flush()  # type: ignore[union-attr]
        async with http.get(f"{url}/api/readings", params={"since": "5m", "limit": "4"}) as resp:
            body = await resp.json()
        assert len(body["readings"]) == 4
        assert body["truncated"] is True
        seqs = [r["seq"] for r in body["readings"]]
        assert seqs == sorted(seqs)
        async with http.get(f"{url}/api/readings", params={"since": "yesterday"}) as resp:
            assert resp.status == 400
            assert "expected a duration" in (await resp.json())["error"]


async def test_run_control_needs_the_token(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAQ_TEST_API_TOKEN", TOKEN)
    api = 'token_env = "DAQ_TEST_API_TOKEN"\n'
    start = {"batch": "B-001", "product": "Lu-PSMA", "nuclide": "Lu-177", "operator": "jdoe"}
    async with running_daemon(data_dir, api=api) as (daemon, url, _), aiohttp.ClientSession() as http:
        for path, body in (("/api/runs", start), ("/api/runs/active/stop", {}),
                           ("/api/runs/active/annotations", {"text": "x", "reason": "y"}),
                           ("/api/runs/active/t0", {"reason": "separation"})):  # fmt: skip
            async with http.post(url + path, json=body, headers={"X-Actor": "jdoe"}) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.post(url + path, json=body, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401, path
                assert (await resp.json())["error"] == "wrong token"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{url}/api/runs", json=start, headers=auth) as resp:
            assert resp.status == 400
            assert "X-Actor" in (await resp.json())["error"]
        async with http.post(
            f"{url}/api/runs", json={**start, "colour": "red"}, headers={**auth, "X-Actor": "jdoe"}
        ) as resp:
            assert resp.status == 400
            assert "unknown colour" in (await resp.json())["error"]
        async with http.post(f"{url}/api/runs", json={**start, "actor": "jdoe"}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            run = await resp.json()
        run_id = run["run_id"]
        async with http.post(f"{url}/api/runs", json=start, headers={**auth, "X-Actor": "jdoe"}) as resp:
            assert resp.status == 409  # a run is already open
        async with http.get(f"{url}/api/runs/active") as resp:
            assert (await resp.json())["active"]["run_id"] == run_id
        async with http.get(f"{url}/api/status") as resp:
            assert (await resp.json())["run"]["run_id"] == run_id
        async with http.post(f"{url}/api/runs/active/annotations", json={"text": "cassette swapped", "reason": "leak"},
                             headers={**auth, "X-Actor": "asmith"}) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
        async with http.post(
            f"{url}/api/runs/active/stop", json={"reason": "done"}, headers={**auth, "X-Actor": "jdoe"}
        ) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(f"{url}/api/runs") as resp:
            assert run_id in [r["run_id"] for r in (await resp.json())["runs"]]
        async with http.get(f"{url}/api/runs/{run_id}") as resp:
            assert resp.status == 200
            assert (await resp.json())["run_id"] == run_id
        async with http.get(f"{url}/api/runs/no-such-run") as resp:
            assert resp.status == 404
        # Without run control the control endpoints say so (after the token check).
        service: Any = daemon.services["api"]
        runs, service.runs = service.runs, None
        try:
            async with http.post(f"{url}/api/runs", json=start, headers={**auth, "X-Actor": "jdoe"}) as resp:
                assert resp.status == 503
                assert "no run manager" in (await resp.json())["error"]
            async with http.post(f"{url}/api/runs", json=start) as resp:
                assert resp.status == 401
        finally:
            service.runs = runs
    with JournalReader(data_dir) as r:
        audit = r.audit()
    annotation = [a for a in audit if a["action"] == "annotation"]
    assert annotation
    assert annotation[0]["actor"] == "asmith"


async def test_control_disabled_without_a_configured_token(data_dir: Path) -> None:
    async with (
        running_daemon(data_dir) as (_, url, _),
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/runs/active/stop", headers={"Authorization": "Bearer anything"}) as resp,
    ):
        assert resp.status == 401
        assert "disabled" in (await resp.json())["error"]


async def test_port_taken_keeps_acquiring_and_retries(data_dir: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    sim = await Vdc404Simulator(options={"interval_s": "0.05"}).serve("tcp://127.0.0.1:0")
    cfg = make_config(
        data_dir, [{"name": "dc1", "kind": "veenstra-vdc404", "port": sim.url}], f"[api]\nport = {port}\n"
    )
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set())
        svc = daemon.services["api"]
        assert isinstance(svc, ApiService)
        assert svc.url is None
        assert svc.error is not None
        assert str(port) in svc.error
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 5)
        blocker.close()
        await wait_until(lambda: svc.url is not None, timeout=20)
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/healthz") as resp:
            assert resp.status == 200
    finally:
        blocker.close()
        daemon.request_stop()
        await task
        await sim.close()


def test_config_refuses_non_loopback_without_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(config_text(tmp_path, [], '[api]\nlisten = "0.0.0.0"\n'), path="cell.toml")
    assert exc.value.file == "cell.toml"
    assert exc.value.key_path == "api.listen"
    assert "allow_non_loopback = true" in str(exc.value)
    cfg = parse_config(config_text(tmp_path, [], '[api]\nallow_non_loopback = true\nlisten = "0.0.0.0"\n'))
    assert cfg.model.api.listen == "0.0.0.0"
    for ok in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert parse_config(config_text(tmp_path, [], f'[api]\nlisten = "{ok}"\n')).model.api.listen == ok
    with pytest.raises(ConfigError, match="expected an IP address"):
        parse_config(config_text(tmp_path, [], '[api]\nlisten = "line-pc.example"\n'))
    with pytest.raises(ConfigError, match="secrets may not be written"):
        parse_config(config_text(tmp_path, [], '[api]\ntoken = "abc"\n'))
    with pytest.raises(ConfigError) as exc:
        parse_config(config_text(tmp_path, [], "[api]\nport = 70000\n"))
    assert exc.value.key_path == "api.port"
    default = parse_config(f'[daemon]\ndata_dir = "{tmp_path}"\n')
    assert (default.model.api.enabled, default.model.api.listen, default.model.api.port) == (
        True,
        "127.0.0.1",
        8470,
    )


def test_filters_and_durations() -> None:
    assert parse_duration("5m") == 300
    assert parse_duration("1.5h") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("-5m")
    f = ReadingFilter.from_params(["dc1,dc2"], ["reactor_*"], ["bad", "UNCERTAIN"])
    assert f.match("dc1", "reactor_temp", 2)
    assert not f.match("dc1", "reactor_temp", 0)
    assert not f.match("dc3", "reactor_temp", 2)
    assert not f.match("dc1", "cell_pressure", 2)
    assert ReadingFilter.from_params().everything


def test_sinks_and_alarms_from_status() -> None:
    services = {
        "forward": {"sinks": {"influx": {"pending": 12, "last_error": "HTTP 503"}}},
        "other": {"backlog": 3, "sink": "vm"},
        "runs": {"active": None},
    }
    sinks = extract_sinks(services)
    assert sinks["influx"]["backlog"] == 12
    assert sinks["influx"]["last_error"] == "HTTP 503"
    assert sinks["vm"]["backlog"] == 3
    status = {
        "journal": {"error": None, "overflowed": 0},
        "instruments": {
            "synth": {"state": "connected", "channels": {
                "alarm_overtemp": {"value": 1.0, "quality": "GOOD", "reason": None},
                "alarm_pressure": {"value": 0.0, "quality": "GOOD", "reason": None},
                "reactor_temp": {"value": None, "quality": "BAD", "reason": "parse_error"}}},
            "dc1": {"state": "backoff", "last_error": "refused", "channels": {}},
        },
        "sinks": sinks,
    }  # fmt: skip
    alarms = compute_alarms(status)
    subjects = [(a["severity"], a["subject"]) for a in alarms]
    assert ("alarm", "synth/alarm_overtemp") in subjects
    assert ("alarm", "dc1") in subjects
    assert ("warning", "synth/reactor_temp") in subjects
    assert ("warning", "sink influx") in subjects
    assert ("alarm", "synth/alarm_pressure") not in subjects
    assert subjects.index(("alarm", "dc1")) < subjects.index(("warning", "sink influx"))


async def test_status_and_metrics_show_a_failing_sink(data_dir: Path, dead_port: int) -> None:
    # A real forwarder towards a port where nothing listens: its backlog grows, its error shows.
    sink = (
        f'[[sinks]]\nname = "influx"\nkind = "influxdb"\nurl = "http://127.0.0.1:{dead_port}"\n'
        'org = "site"\nbucket = "daq"\nbackoff_initial_s = 0.1\nbackoff_cap_s = 0.5\nmax_age_s = 0.1\n'
    )
    async with running_daemon(data_dir, api="\n" + sink) as (daemon, url, _), aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 10)

        async def sink_status() -> dict[str, Any]:
            async with http.get(f"{url}/api/status") as resp:
                return (await resp.json())["sinks"]["influx"]  # type: ignore[no-any-return]

        deadline = asyncio.get_running_loop().time() + 30
        while not ((s := await sink_status())["last_error"] and s["backlog"]):
            assert asyncio.get_running_loop().time() < deadline, s
            await asyncio.sleep(0.2)
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{url}/api/status") as resp:
            alarms = (await resp.json())["alarms"]
    backlog = re.search(r'^daq_sink_backlog\{sink="influx"\} (\d+)$', text, re.M)
    assert backlog
    assert int(backlog.group(1)) > 0
    assert any(a["subject"] == "sink influx" for a in alarms)
