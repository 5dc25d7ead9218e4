"""Two sinks per daemon (a store on the line PC and the central one), each a real VictoriaMetrics.

Each sink has its own cursor, status and alarm: one down for the whole run never holds back the
other, and when it returns it catches up exactly (server equal to the journal, per series).
Retention keeps what either sink has not acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from daq.daemon import Daemon
from daq.forward.service import ForwardService
from daq.forward.status import status_file
from daq.journal import JournalReader
from daq.journal.journal import JOURNAL_FILE
from daq.runs import store
from daq.runs.export import write_export
from daq.runs.retention import DAY_NS, prune
from simulators.veenstra_vdc404 import Vdc404Simulator
from tests.helpers import wait_until
from tests.runs_helpers import record_run
from tests.test_forward import (
    ScriptedServer,
    cell_config,
    drain,
    journal_series,
    sink_toml,
    wait_server_matches,
)
from tests.victoria import Victoria


async def test_a_sink_down_for_the_whole_run_never_holds_back_the_other_and_catches_up_exactly(
    data_dir: Path, tmp_path: Path
) -> None:
    for name in ("local", "central"):
        (tmp_path / name).mkdir()
    local = Victoria(tmp_path / "local" / "victoria")
    central = Victoria(tmp_path / "central" / "victoria")  # not started: down from the start
    local.start()
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "Lu-177"}).serve(
        "tcp://127.0.0.1:0"
    )
    sinks = sink_toml(local.url, name="local") + sink_toml(central.url, name="central")
    daemon = Daemon(cell_config(data_dir, sim.url, sinks))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.ready.is_set(), timeout=30)
        svc = daemon.services["forward"]
        assert isinstance(svc, ForwardService)
        fwd = {f.sink.name: f for f in svc.forwarders}
        journal = daemon.journal
        assert journal is not None
        await wait_until(lambda: fwd["central"].retries >= 3 and journal.last_reading_id >= 100, timeout=30)
        # The local sink stays current while the central one retries: everything journaled
        # by now reaches the local store within about one batch age (0.1 s here).
        mark = journal.last_reading_id
        await wait_until(lambda: fwd["local"].cursor >= mark, timeout=10)
        assert fwd["central"].cursor == 0
        assert fwd["central"].points_written == 0
        status = daemon.status()["services"]["forward"]["sinks"]
        assert status["central"]["state"] == "retrying"
        assert status["central"]["last_error"] is not None
        assert status["central"]["pending"] >= mark
        assert status["local"]["last_error"] is None
        assert status["local"]["alarm"] is None
        assert status["local"]["pending"] < 100

        # Each sink has its own cursor in the journal (stored just after the sink acknowledged,
        # beside its next batch) and its own status file.
        def stored() -> dict[str, int]:
            with JournalReader(data_dir) as r:
                return {name: c["last_id"] for name, c in r.sink_cursors().items()}

        await wait_until(lambda: stored()["local"] >= mark, timeout=10)
        assert stored()["central"] == 0
        await wait_until(lambda: status_file(data_dir, "central").exists(), timeout=10)
        on_disk = json.loads(status_file(data_dir, "central").read_text())
        assert on_disk["points_written"] == 0
        assert on_disk["last_error"]
        # The central store returns while readings flow: it catches up, the local one goes on.
        await asyncio.to_thread(central.start)
        back = journal.last_reading_id
        await wait_until(lambda: fwd["central"].cursor >= back and fwd["local"].cursor >= back, timeout=60)
        assert fwd["central"].status()["last_error"] is not None  # the outage stays visible
    finally:
        daemon.request_stop()
        await task
        await sim.close()
    try:
        # What was journaled after each sink's last write, at shutdown.
        await drain(data_dir, local.url, name="local")
        await drain(data_dir, central.url, name="central")
        await wait_server_matches(local, data_dir)
        await wait_server_matches(central, data_dir)
        _, n = journal_series(data_dir)
        assert n >= 100
    finally:
        local.stop()
        central.stop()


async def test_an_alarm_on_one_sink_is_its_own_and_the_other_stays_current(
    data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "local").mkdir()
    local = Victoria(tmp_path / "local" / "victoria")
    local.start()
    sim = await Vdc404Simulator(options={"interval_s": "0.02", "nuclide": "F-18"}).serve("tcp://127.0.0.1:0")
    try:
        async with ScriptedServer(default=401) as central:  # a revoked token: a person must act
            sinks = sink_toml(local.url, name="local") + sink_toml(central.url, name="central")
            daemon = Daemon(cell_config(data_dir, sim.url, sinks))
            task = asyncio.create_task(daemon.run())
            try:
                await wait_until(lambda: daemon.ready.is_set(), timeout=30)
                svc = daemon.services["forward"]
                assert isinstance(svc, ForwardService)
                fwd = {f.sink.name: f for f in svc.forwarders}
                journal = daemon.journal
                assert journal is not None
                await wait_until(lambda: fwd["central"].alarm is not None and journal.last_reading_id >= 50)
                mark = journal.last_reading_id
                await wait_until(lambda: fwd["local"].cursor >= mark, timeout=10)
                status = daemon.status()["services"]["forward"]["sinks"]
                assert status["central"]["state"] == "alarm"
                assert status["central"]["alarm"].startswith("HTTP 401")
                assert status["local"]["alarm"] is None
                assert status["local"]["state"] in ("idle", "sending")
                central.default = 204  # the token is renewed
                back = journal.last_reading_id
                await wait_until(
                    lambda: fwd["central"].cursor >= back and fwd["central"].alarm is None, timeout=30
                )
            finally:
                daemon.request_stop()
                await task
            await drain(data_dir, central.url, name="central")
            with JournalReader(data_dir) as r:
                alarms = [
                    (a["action"], a["subject"]) for a in r.audit() if a["action"].startswith("sink_alarm")
                ]
                rows = r.max_reading_id()
            assert alarms == [("sink_alarm", "central"), ("sink_alarm_cleared", "central")]
            # Every reading reached the central sink (a replayed batch repeats identical lines).
            assert len({line for line in central.accepted if line}) == rows
        await drain(data_dir, local.url, name="local")
        await wait_server_matches(local, data_dir)
    finally:
        await sim.close()
        local.stop()


async def test_retention_keeps_what_either_of_two_sinks_has_not_acknowledged(
    data_dir: Path, tmp_path: Path
) -> None:
    rec = await record_run(data_dir, readings=10)
    with JournalReader(data_dir) as r:
        run = store.get_run(r.conn, rec.run_id)
        first_in_run = r.conn.execute(
            "SELECT MIN(id) FROM readings WHERE run_id = ?", (rec.run_id,)
        ).fetchone()[0]
        last = r.max_reading_id()
    # The local sink has everything; the central one stopped before the run.
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    conn.executemany(
        "INSERT INTO sink_cursors (sink, last_id, updated_ns) VALUES (?, ?, 0)",
        [("local", last), ("central", first_in_run - 1)],
    )
    conn.commit()
    conn.close()
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    done = prune(
        data_dir, exports=[out], retention_days=365, actor="qa", now_ns=run["ended_ns"] + 400 * DAY_NS
    )
    assert done.held_by_sinks == ["central"]
    assert done.through["readings"] == first_in_run - 1
    with JournalReader(data_dir) as r:
        kept = r.conn.execute("SELECT COUNT(*) FROM readings WHERE run_id = ?", (rec.run_id,)).fetchone()[0]
    assert kept > 0
