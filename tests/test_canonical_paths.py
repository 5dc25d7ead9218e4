"""Hostile input over the real paths: each case once stopped the journal writer or made a
legitimate batch fail verification on main.

- ``daq runs annotate`` with argv bytes that are not UTF-8, through the real CLI and API;
- an ``X-Actor`` header with a non-UTF-8 byte and a JSON body with a lone surrogate;
- a VDC-404 showing ``-0.000`` (its simulator, over a real socket): verifies and exports;
- an OPC UA server (a real asyncua server) sending the null DateTime as source and server
  timestamp: readings are journaled with no timestamp, noted, and the writer goes on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server

from daq.clock import SystemClock
from daq.daemon import Daemon
from daq.journal import Journal, JournalReader, verify_journal
from daq.model import Quality, Reading
from daq.runs import store
from daq.runs.export import verify_export, write_export
from drivers.opcua import OpcUaConfig, OpcUaDriver
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import free_port, wait_until
from tests.runs_helpers import vdc_config

REPO = Path(__file__).resolve().parents[1]
TOKEN_ENV = "DAQ_TEST_CANON_TOKEN"


async def test_non_utf8_text_through_the_cli_and_the_api_is_journaled_escaped(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    sim = await Vdc404Simulator(options={"interval_s": "0.03"}).serve("tcp://127.0.0.1:0")
    cfg = vdc_config(data_dir, sim.url, f'[api]\nport = 0\ntoken_env = "{TOKEN_ENV}"\n')
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: "api" in daemon.services and bool(getattr(daemon.services["api"], "url", None))
        )
        api: Any = daemon.services["api"]
        sup = daemon.supervisors[0]

        def post(path: str, body: bytes, actor: str | None) -> dict[str, Any]:
            headers = {"Content-Type": "application/json", "Authorization": "Bearer s3cret-token"}
            if actor is not None:
                headers["X-Actor"] = actor  # sent as latin-1: the byte 0xE4 is not UTF-8
            req = urllib.request.Request(api.url + path, data=body, method="POST", headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                return dict(json.loads(resp.read()))

        # A JSON body with a lone surrogate, and an X-Actor header that is not UTF-8.
        body = b'{"batch": "B-\\ud800", "product": "P", "nuclide": "F-18", "operator": "op\\udfff"}'
        started = await asyncio.to_thread(post, "/api/runs", body, "K\xe4the")
        run_id = started["run_id"]
        # The real command line, given argv bytes that are not UTF-8.
        env = {**os.environ, TOKEN_ENV: "s3cret-token"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daq", "runs", "annotate", b"vial K\xe4lte", "--reason", b"\xff",
            "--api", api.url, "--token-env", TOKEN_ENV, "--actor", b"op\xe4",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode(errors="replace")
        assert f"annotate recorded for run {run_id}".encode() in out
        # Acquisition and the writer went on.
        before = sup.readings
        await wait_until(lambda: sup.readings >= before + 3)
        journal = daemon.journal
        assert journal is not None
        await asyncio.wait_for(journal.flush(), 5)
        await asyncio.to_thread(post, "/api/runs/active/stop", b'{"reason": "done \\ud800"}', "K\xe4the")
        # A record the journal cannot store is refused, kept as an event, and shown.
        journal.record("configs", {"ts_ns": 1, "sha256": "x", "path": None, "text": {"not": "text"}})
        await asyncio.wait_for(journal.flush(), 5)

        def get(path: str) -> bytes:
            with urllib.request.urlopen(api.url + path, timeout=10) as resp:
                return bytes(resp.read())

        status = json.loads(await asyncio.to_thread(get, "/api/status"))
        assert status["journal"]["rejected"] == 1
        assert any("1 records refused" in a["message"] for a in status["alarms"])
        assert b"daq_journal_rejected_total 1" in await asyncio.to_thread(get, "/metrics")
        assert json.loads(await asyncio.to_thread(get, "/healthz"))["journal"]["rejected"] == 1
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await sim.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, run_id)
        audit = [a for a in r.audit() if a["run_id"] == run_id]
    assert run["batch"] == "B-\\ud800"
    assert run["operator"] == "op\\udfff"
    assert run["started_by"] == "K\\xe4the"
    assert run["stop_reason"] == "done \\ud800"
    assert run["seal"]
    note = run["annotations"][0]
    assert (note["text"], note["reason"], note["actor"]) == ("vial K\\xe4lte", "\\xff", "op\\xe4")
    annotation = next(a for a in audit if a["action"] == "annotation")
    assert annotation["actor"] == "op\\xe4"
    assert annotation["detail"]["text"] == "vial K\\xe4lte"
    out_dir = data_dir.parent / "export"
    write_export(data_dir, run_id, out_dir)
    assert verify_export(out_dir, data_dir=data_dir).ok


async def test_a_zeroed_calibrator_reading_minus_zero_verifies_and_exports(data_dir: Path) -> None:
    sim = await Vdc404Simulator(options={"interval_s": "0.03"}, faults={"zeroed": 1}).serve(
        "tcp://127.0.0.1:0"
    )
    daemon = Daemon(vdc_config(data_dir, sim.url))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: "runs" in daemon.services and bool(daemon.supervisors))
        runs: Any = daemon.services["runs"]
        run = await runs.open_run(batch="Z-1", product="P", nuclide="F-18", operator="op", actor="op")
        sup = daemon.supervisors[0]
        start = sup.readings
        await wait_until(lambda: sup.readings >= start + 5)
        await runs.close_run(actor="op", reason="done")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await sim.close()
    report = verify_journal(data_dir)
    assert report.ok, report.problem
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["run_id"] == run["run_id"]]
    assert len(rows) >= 5
    assert all(x["quality"] == Quality.GOOD for x in rows)
    assert {repr(x["value"]) for x in rows} == {"0.0"}
    assert {x["attrs"]["reported_value"] for x in rows} == {0.0}
    assert all(x["raw"] == b"F-18: -0.000 MBq\r\n" for x in rows)
    out = data_dir.parent / "export"
    write_export(data_dir, run["run_id"], out)
    checked = verify_export(out, data_dir=data_dir)
    assert checked.ok, checked.problem


NULL_DATETIME = datetime(1601, 1, 1, tzinfo=UTC)  # 0 on the wire: OPC UA's "no time"
OPCUA_NULL_NS = -11_644_473_600_000_000_000


@pytest.fixture
async def null_time_server() -> AsyncIterator[tuple[Server, ua.NodeId, str]]:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    server = Server()
    await server.init()
    server.set_endpoint(url + "/")
    idx = await server.register_namespace("urn:hotcell-daq:test:null-time")
    obj = await server.nodes.objects.add_object(idx, "Plc")
    var = await obj.add_variable(ua.NodeId("level", idx), "level", 1.0)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server, var.nodeid, url
    finally:
        await server.stop()


async def write_null_stamped(server: Server, node: ua.NodeId, value: float) -> None:
    dv = ua.DataValue(
        ua.Variant(value, ua.VariantType.Double),
        SourceTimestamp=NULL_DATETIME,  # type: ignore[arg-type]
        ServerTimestamp=NULL_DATETIME,  # type: ignore[arg-type]
    )
    await server.write_attribute_value(node, dv)


async def test_opcua_null_datetime_is_journaled_as_no_timestamp(
    data_dir: Path, null_time_server: tuple[Server, ua.NodeId, str]
) -> None:
    server, node, url = null_time_server
    await write_null_stamped(server, node, 2.0)
    cfg = OpcUaConfig(
        name="plc1", kind="opcua", url=url,
        nodes=[{"channel": "level", "node_id": node.to_string(), "unit": "m"}],  # type: ignore[list-item]
    )  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    journal = await Journal.open(data_dir, clock=SystemClock())
    try:
        await driver.connect()
        got: list[Reading] = []
        async with asyncio.timeout(10):
            value = 3.0
            while len(got) < 3:
                batch = await driver.read()
                got.extend(r for r in batch if r.channel == "level")
                journal.append_many(batch)
                await write_null_stamped(server, node, value)
                value += 1
        # What the driver makes of the wire's 0: 1601-01-01 on both clocks.
        assert any(r.device_ns == OPCUA_NULL_NS for r in got)
        async with asyncio.timeout(5):
            await journal.flush()
        assert journal.writer_running
        assert journal.rejected == 0
    finally:
        await driver.close()
        await journal.close()
    assert verify_journal(data_dir).ok
    with JournalReader(data_dir) as r:
        rows = [x for x in r.readings() if x["channel"] == "level"]
    stamped_null = [x for x in rows if "outside 1970..2200" in ((x["attrs"] or {}).get("canonical") or "")]
    assert stamped_null
    for x in stamped_null:
        assert x["device_ns"] is None
        assert x["attrs"]["source_ns"] is None
        assert x["attrs"]["server_ns"] is None
        assert x["value"] is not None
        assert x["quality"] == Quality.GOOD


async def test_prune_by_an_actor_named_in_bytes_that_are_not_utf8(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The journal written without the daemon (daq prune, daq sinks) follows the same rules.
    import time
    import types

    from daq.cli import main as cli
    from daq.runs import retention
    from tests.runs_helpers import record_run

    rec = await record_run(data_dir, readings=5)
    later = types.SimpleNamespace(
        time_ns=lambda: time.time_ns() + 2 * retention.DAY_NS, monotonic_ns=time.monotonic_ns
    )
    monkeypatch.setattr(retention, "time", later)
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    actor = b"K\xe4the".decode("utf-8", "surrogateescape")  # what Python makes of argv bytes
    args = ["prune", "--data-dir", str(data_dir), "--export", str(out), "--retention-days", "1"]
    assert cli([*args, "--actor", actor]) == 0
    capsys.readouterr()
    assert cli(["verify", "--data-dir", str(data_dir)]) == 0
    with JournalReader(data_dir) as r:
        (entry,) = [a for a in r.audit() if a["action"] == "prune"]
        prunes = r.table("prunes")
    assert entry["actor"] == "K\\xe4the"
    assert {p["actor"] for p in prunes} == {"K\\xe4the"}
