"""Alarms: configured limits with deadband and delays, their ISA-18.2 states, the alarm journal
and the audit trail; over a real Modbus TCP server (the synthesizer simulator), the local API
with its token, and ``daq status``'s exit code."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pymodbus.client import AsyncModbusTcpClient

from daq import timefmt
from daq.alarms.engine import AlarmEngine
from daq.alarms.points import ACKED, NORMAL, RTN_UNACK, UNACK, AlarmError, transition
from daq.alarms.service import left_open
from daq.alarms.settings import AlarmsSection
from daq.alarms.store import rows_between, transition_of
from daq.cli import main as cli_main
from daq.cli.alarms import transition_line
from daq.clock import ManualClock
from daq.configfile.load import parse_config
from daq.daemon import Daemon
from daq.errors import ConfigError
from daq.journal import JournalReader
from daq.journal.feed import RecordBatch
from daq.journal.journal import JOURNAL_FILE, Journal
from daq.journal.schema import CHAINED
from daq.journal.verify import verify_journal
from daq.model import Quality, Reading
from daq.runs.checked import journal_run, open_journal
from daq.runs.export import decoded
from daq.runs.report import render
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_modbus_map import SETPOINT_ADDRESS
from tests.helpers import api_daemon, config_text, make_config
from tests.test_modbus_driver import instrument

TOKEN = "alarm-test-token"


def engine(clock: ManualClock, **limits: Any) -> AlarmEngine:
    section = AlarmsSection.model_validate({"limits": [{"instrument": "synth", "channel": "p", **limits}]})
    return AlarmEngine(section, clock=clock)


def feed(eng: AlarmEngine, clock: ManualClock, value: float | None, *, after_s: float = 0.1) -> Reading:
    clock.advance(after_s)
    quality = Quality.GOOD if value is not None else Quality.BAD
    r = Reading("synth", "p", value, "Pa", quality, clock.time_ns(), clock.monotonic_ns())
    assert eng(r) is r  # the stage never changes a reading
    return r


def states(eng: AlarmEngine) -> dict[str, str]:
    return {p.condition: p.state for p in eng.points[("synth", "p")]}


def test_limit_deadband_and_isa_states() -> None:
    clock = ManualClock()
    eng = engine(clock, high=100.0, high_high=150.0, deadband=5.0, severity="medium")
    feed(eng, clock, 99.0)
    assert states(eng) == {"HH": NORMAL, "H": NORMAL}
    feed(eng, clock, 100.5)
    assert states(eng) == {"HH": NORMAL, "H": UNACK}
    [active] = eng.active()
    assert active["severity"] == "medium"
    assert active["active"]
    assert not active["acknowledged"]
    # Inside the limit but within the deadband: still active.
    feed(eng, clock, 97.0)
    assert states(eng)["H"] == UNACK
    feed(eng, clock, 94.9)
    assert states(eng)["H"] == RTN_UNACK  # returned before anyone acknowledged
    assert eng.unacknowledged() == 0
    assert eng.counts()["medium"] == 0
    alarm_id = eng.active()[0]["id"]
    done = eng.acknowledge(alarm_id, actor="jdoe", comment="seen, door resealed")
    assert done["state"] == NORMAL
    assert eng.active() == []
    assert eng.listing()["recent"][0]["acked_by"] == "jdoe"
    # A new excursion is a new alarm; high-high takes the extreme severity.
    feed(eng, clock, 160.0)
    assert states(eng) == {"HH": UNACK, "H": UNACK}
    assert eng.counts() == {"critical": 1, "high": 0, "medium": 1, "low": 0}
    hh = next(a for a in eng.active() if a["condition"] == "HH")
    assert hh["id"] != alarm_id
    eng.acknowledge(hh["id"], actor="jdoe", comment="known")
    assert states(eng)["HH"] == ACKED
    feed(eng, clock, 120.0)
    assert states(eng) == {"HH": NORMAL, "H": UNACK}  # acknowledged and cleared: normal
    with pytest.raises(AlarmError, match="no alarm"):
        eng.acknowledge(hh["id"], actor="jdoe", comment="again")
    with pytest.raises(AlarmError, match="comment"):
        eng.acknowledge(eng.active()[0]["id"], actor="jdoe", comment=" ")


def test_low_limits_and_deadband_above() -> None:
    clock = ManualClock()
    eng = engine(clock, low=-50.0, low_low=-80.0, deadband=2.0)
    feed(eng, clock, -49.0)
    feed(eng, clock, -50.5)
    assert states(eng) == {"L": UNACK, "LL": NORMAL}
    feed(eng, clock, -48.5)
    assert states(eng)["L"] == UNACK  # within 2 Pa of the limit
    feed(eng, clock, -47.9)
    assert states(eng)["L"] == RTN_UNACK


def test_on_and_off_delays_follow_the_monotonic_clock() -> None:
    clock = ManualClock()
    eng = engine(clock, high=10.0, on_delay_s=2.0, off_delay_s=1.0)
    feed(eng, clock, 11.0)
    feed(eng, clock, 11.0, after_s=1.5)
    assert states(eng)["H"] == NORMAL  # 1.5 s beyond the limit: not yet
    feed(eng, clock, 9.0)  # back inside: the on-delay starts again
    feed(eng, clock, 11.0)
    feed(eng, clock, 11.0, after_s=1.9)
    assert states(eng)["H"] == NORMAL
    clock.step_wall(-3600)  # a wall-clock step changes nothing
    feed(eng, clock, 11.0, after_s=0.2)
    assert states(eng)["H"] == UNACK
    feed(eng, clock, 9.0)
    feed(eng, clock, 9.0, after_s=0.5)
    assert states(eng)["H"] == UNACK  # off-delay not over
    feed(eng, clock, None, after_s=0.1)  # a gap resets the pending delay and holds the state
    feed(eng, clock, 9.0, after_s=0.9)
    assert states(eng)["H"] == UNACK
    feed(eng, clock, 9.0, after_s=1.0)
    assert states(eng)["H"] == RTN_UNACK


def test_the_stage_never_raises_into_acquisition() -> None:
    clock = ManualClock()
    eng = engine(clock, high=1.0)
    eng.points[("synth", "p")][0].limits = None  # type: ignore[assignment]
    feed(eng, clock, 2.0)
    assert eng.errors == 1


def test_config_refuses_bad_limits(tmp_path: Path) -> None:
    base = '[[alarms.limits]]\ninstrument = "synth"\nchannel = "p"\n'
    for extra, where in (
        ("high = 1.0\nlow = 2.0\n", "low (2.0) must be below high (1.0)"),
        ("deadband = -1.0\nhigh = 1.0\n", "deadband"),
        ("", "give at least one"),
        ('high = 1.0\nseverity = "urgent"\n', "severity"),
        ("high = 1.0\ncolour = 1\n", "colour"),
        ("high = 1.0\n", "no instrument named 'synth'"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(config_text(tmp_path, [], base + extra))
        assert where in str(info.value) or "alarms.limits[0]" in str(info.value), str(info.value)


# -- over a real Modbus server, the API and the journal ------------------------------------------


async def write_setpoint(url: str, value: float) -> None:
    """Write the synthesizer's reactor setpoint (a float32 in two holding registers) over Modbus."""
    host, port = url.removeprefix("tcp://").split(":")
    client = AsyncModbusTcpClient(host, port=int(port))
    await client.connect()
    try:
        words = struct.unpack(">HH", struct.pack(">f", value))
        result = await client.write_registers(SETPOINT_ADDRESS, list(words), device_id=1)
        assert not result.isError()
    finally:
        client.close()


@contextlib.asynccontextmanager
async def synth_daemon(data_dir: Path, limits: str) -> AsyncIterator[tuple[Daemon, str, str]]:
    sim = SynthModbusSimulator(seed=3, options={"time_scale": "1"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    extra = f'[api]\nport = 0\ntoken_env = "DAQ_TEST_ALARM_TOKEN"\n{limits}'
    cfg = make_config(data_dir, [instrument("synth", listener.url)], extra)
    try:
        async with api_daemon(cfg) as (daemon, url):
            yield daemon, url, listener.url
    finally:
        await listener.close()


SETPOINT_LIMITS = """
[[alarms.limits]]
instrument = "synth"
channel = "reactor_setpoint"
high = 120.0
deadband = 5.0
on_delay_s = 0.3
off_delay_s = 0.3
severity = "high"
message = "reactor setpoint above 120 degC"
"""


async def daq(*argv: str) -> tuple[int, str, str]:
    """Run the ``daq`` command line (in a thread: it blocks on the daemon's API, which runs on
    this event loop); its exit code, stdout and stderr."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
        return code, out.getvalue(), err.getvalue()

    return await asyncio.get_running_loop().run_in_executor(None, run)


async def alarms_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/alarms") as resp:
        assert resp.status == 200
        return dict(await resp.json())


@pytest.mark.slow
async def test_limit_over_modbus_raised_acknowledged_cleared(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAQ_TEST_ALARM_TOKEN", TOKEN)
    monkeypatch.setenv("DAQ_API_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        synth_daemon(data_dir, SETPOINT_LIMITS) as (daemon, url, modbus),
        aiohttp.ClientSession() as http,
    ):
        assert (await alarms_of(http, url))["active"] == []
        start = {
            "batch": "B-7",
            "product": "Lu-PSMA",
            "nuclide": "Lu-177",
            "operator": "jdoe",
            "actor": "jdoe",
        }
        async with http.post(f"{url}/api/runs", json=start, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            run_id = (await resp.json())["run_id"]
        await write_setpoint(modbus, 130.0)
        got: dict[str, Any] = {}

        async def poll() -> bool:
            got.update(await alarms_of(http, url))
            return bool(got["active"])

        for _ in range(200):
            if await poll():
                break
            await asyncio.sleep(0.05)
        [alarm] = got["active"]
        assert alarm["state"] == UNACK
        assert alarm["severity"] == "high"
        assert alarm["value"] == 130.0
        assert alarm["message"] == "reactor setpoint above 120 degC"
        async with http.get(f"{url}/api/status") as resp:
            status = await resp.json()
        # The status entry is complete on its own (when raised, value), so a page drawing the
        # banner from one status answer never shows a limit alarm without its time.
        [entry] = [a for a in status["alarms"] if a.get("id") == alarm["id"]]
        assert (entry["raised_ns"], entry["value"], entry["unit"]) == (
            alarm["raised_ns"],
            130.0,
            alarm["unit"],
        )
        assert entry["acknowledged"] is False
        assert status["services"]["alarms"]["unacknowledged"] == 1
        async with http.get(f"{url}/metrics") as resp:
            assert 'daq_alarms_active{severity="high"} 1' in await resp.text()
        # daq status exits 3 while an unacknowledged alarm is active.
        code, out, err = await daq("status", "--api", url)
        assert code == 3, (out, err)
        assert "unacknowledged" in out
        code, out, err = await daq("alarms", "list", "--api", url, "--json")
        assert code == 0, err
        assert [a["id"] for a in json.loads(out)["active"]] == [alarm["id"]]
        code, out, err = await daq("alarms", "ack", "nosuch", "--comment", "x", "--api", url)
        assert code != 0
        assert "no alarm 'nosuch'" in err
        # Acknowledging needs the token and a comment.
        ack = f"{url}/api/alarms/{alarm['id']}/ack"
        async with http.post(ack, json={"comment": "x", "actor": "jdoe"}) as resp:
            assert resp.status == 401
        async with http.post(ack, json={"actor": "jdoe"}, headers=auth) as resp:
            assert resp.status == 400
        async with http.post(
            f"{url}/api/alarms/nosuch/ack", json={"comment": "x", "actor": "jdoe"}, headers=auth
        ) as resp:
            assert resp.status == 404
        async with http.post(ack, json={"comment": "setpoint test", "actor": "jdoe"}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["state"] == ACKED
        code, out, err = await daq("status", "--api", url)
        assert code == 0, (out, err)
        # Inside the limit but within the deadband: stays active.
        await write_setpoint(modbus, 117.0)
        await asyncio.sleep(0.8)
        assert (await alarms_of(http, url))["active"][0]["state"] == ACKED
        # daq tail --alarms: the alarm as it is when it connects, then its transitions.
        tail = asyncio.ensure_future(daq("tail", "--alarms", "--json", "--api", url, "--duration", "2"))
        await asyncio.sleep(0.2)
        await write_setpoint(modbus, 100.0)
        for _ in range(200):
            if not (await alarms_of(http, url))["active"]:
                break
            await asyncio.sleep(0.05)
        listing = await alarms_of(http, url)
        assert listing["active"] == []
        assert listing["recent"][0]["id"] == alarm["id"]
        assert listing["recent"][0]["state"] == NORMAL
        code, out, err = await tail
        assert code == 0, err
        shown = [json.loads(line) for line in out.splitlines() if line.startswith('{"type":"alarm"')]
        assert [(t["kind"], t["state"], t["id"]) for t in shown] == [
            ("active", ACKED, alarm["id"]),
            ("cleared", NORMAL, alarm["id"]),
        ]
        assert all(t["instrument"] == "synth" for t in shown)
        async with http.post(f"{url}/api/runs/active/stop", json={"actor": "jdoe"}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        await daemon.journal.flush()  # type: ignore[union-attr]
    with JournalReader(data_dir) as reader:
        rows = reader.conn.execute(
            "SELECT kind, state, actor, comment FROM alarm_events WHERE alarm_id = ? ORDER BY id",
            (alarm["id"],),
        ).fetchall()
        audit = [a for a in reader.audit() if a["action"] == "alarm_acknowledged"]
    assert rows == [
        ("raised", UNACK, "daemon", None),
        ("acknowledged", ACKED, "jdoe", "setpoint test"),
        ("cleared", NORMAL, "daemon", None),
    ]
    [entry] = audit
    assert entry["actor"] == "jdoe"
    assert entry["subject"] == alarm["id"]
    assert entry["detail"]["comment"] == "setpoint test"
    code, out, err = await daq("alarms", "list", "--data-dir", str(data_dir), "--json")
    assert code == 0, err
    [offline] = json.loads(out)["recent"]
    assert offline["id"] == alarm["id"]
    assert (offline["state"], offline["acked_by"], offline["comment"]) == (NORMAL, "jdoe", "setpoint test")
    report = verify_journal(data_dir)
    assert report.ok, report
    assert report.rows["alarm_events"] == 3
    # The run report lists the alarm raised during the run, with who acknowledged it (the whole
    # report is rendered, through its public entry point: most of this test's time).
    conn = open_journal(data_dir)
    try:
        data, _, _ = journal_run(conn, run_id)
    finally:
        conn.close()
    render(decoded(data), tmp_path / "r.png", png=True)
    texts = []
    for page in sorted(tmp_path.glob("r-p*.png")):
        with Image.open(page) as im:
            if im.text["Sections"] == "alarms":  # type: ignore[attr-defined]
                texts.append(im.text["Text"])  # type: ignore[attr-defined]
    text = " ".join("\n".join(texts).split())  # lines wrap on the page
    assert "Limit alarms raised during the run (1, from the alarm journal)" in text
    assert f"HIGH synth/reactor_setpoint H {alarm['id']}: reactor setpoint above 120 degC" in text
    assert "by jdoe: setpoint test" in text


async def test_each_alarm_event_row_is_the_transition_the_stream_sends(data_dir: Path) -> None:
    """A transition reaches the journal's alarm feed only with the commit of its row, with the
    row's id; the row alone gives back the transition as the engine saw it (live or read from
    the journal later), and it reads for people."""
    clock = ManualClock()
    eng = engine(clock, low=5.0, severity="low", message="pressure low")
    journal = await Journal.open(data_dir, clock=clock)
    eng.attach(journal)
    sub = journal.record_feed("alarm_events").subscribe(100, "test")
    expected: list[dict[str, Any]] = []

    def happened(kind: str, actor: str = "daemon", comment: str | None = None) -> None:
        [p] = eng.points[("synth", "p")]
        expected.append(transition(p, kind=kind, ts_ns=clock.time_ns(), actor=actor, comment=comment))

    feed(eng, clock, 4.0)
    happened("raised")
    assert sub.take() == []  # queued in the journal, not committed: nothing for live clients
    await journal.flush()
    clock.advance(1.0)
    eng.acknowledge(eng.active()[0]["id"], actor="ann", comment="valve closed")
    happened("acknowledged", "ann", "valve closed")
    feed(eng, clock, 6.0)
    happened("cleared")
    await journal.flush()
    batches = sub.take()
    assert all(isinstance(b, RecordBatch) for b in batches)
    live = [
        transition_of(dict(zip(CHAINED["alarm_events"], row, strict=True)))
        for b in batches
        if isinstance(b, RecordBatch)
        for row in b.rows
    ]
    with JournalReader(data_dir) as reader:
        stored = [transition_of(row) for row in rows_between(reader.conn, 0, 3, limit=10)]
    assert live == stored
    assert [t.pop("event_id") for t in live] == [1, 2, 3]
    assert live == expected
    assert [(t["kind"], t["state"]) for t in live] == [
        ("raised", UNACK),
        ("acknowledged", ACKED),
        ("cleared", NORMAL),
    ]
    assert (live[2]["raised_ns"], live[2]["acked_by"]) == (live[0]["ts_ns"], "ann")
    line = transition_line(live[1])
    assert "ALARM acknowledged" in line
    assert "synth/p L = 4 Pa" in line
    assert line.endswith("pressure low [acknowledged active] by ann: valve closed")
    sub.close()
    await journal.close()


async def test_an_alarm_active_at_a_restart_is_taken_back_from_the_journal(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock()
    first = engine(clock, high=10.0)
    journal = await Journal.open(data_dir, clock=clock)
    first.attach(journal)
    feed(first, clock, 12.0)
    [raised] = first.active()
    await journal.close()

    again = engine(clock, high=10.0)
    assert again.restore(left_open(data_dir / JOURNAL_FILE)) == 1
    [back] = again.active()
    assert (back["id"], back["state"], back["raised_ns"]) == (raised["id"], UNACK, raised["raised_ns"])
    journal = await Journal.open(data_dir, clock=clock)
    again.attach(journal)
    feed(again, clock, 9.0)  # the value is back: the same alarm returns to normal, unacknowledged
    again.acknowledge(raised["id"], actor="ann", comment="after the restart")
    await journal.close()
    with JournalReader(data_dir) as reader:
        kinds = reader.conn.execute(
            "SELECT kind, state FROM alarm_events WHERE alarm_id = ? ORDER BY id", (raised["id"],)
        ).fetchall()
    assert kinds == [("raised", UNACK), ("cleared", RTN_UNACK), ("acknowledged", NORMAL)]
    assert left_open(data_dir / JOURNAL_FILE) == []
    assert verify_journal(data_dir).ok
    # What people read is in the site's zone with its offset (a zone that is not UTC here).
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        capsys.readouterr()
        assert cli_main(["alarms", "list", "--data-dir", str(data_dir), "--all"]) == 0
        out = capsys.readouterr().out
    finally:
        monkeypatch.undo()
        time.tzset()
        timefmt.set_site_zone(None)
    assert raised["id"] in out
    assert "+05:30" in out
    assert "by ann: after the restart" in out


def test_built_in_rules_are_alarms_of_the_engine() -> None:
    from daq.alarms.points import COMM, ON
    from daq.status import compute_alarms

    clock = ManualClock()
    eng = AlarmEngine(AlarmsSection(), clock=clock)

    def reading(channel: str, value: float | None, reason: str | None = None) -> Reading:
        clock.advance(0.1)
        quality = Quality.GOOD if value is not None else Quality.BAD
        r = Reading(
            "synth", channel, value, "", quality, clock.time_ns(), clock.monotonic_ns(), reason=reason
        )
        assert eng(r) is r
        return r

    # An alarm channel of the instrument itself: non-zero raises, zero clears.
    reading("alarm_overtemp", 0.0)
    assert eng.active() == []
    reading("alarm_overtemp", 1.0)
    [on] = eng.active()
    assert (on["channel"], on["condition"], on["state"]) == ("alarm_overtemp", ON, UNACK)
    assert on["message"] == "synth/alarm_overtemp alarm active"
    eng.acknowledge(on["id"], actor="op", comment="cooling checked")
    reading("alarm_overtemp", 0.0)
    assert eng.active() == []
    # Other channels make no built-in alarm, whatever their value.
    reading("reactor_temp", 120.0)
    assert eng.active() == []
    # A lost link: the gap of a disconnection raises COMM once; data again clears it.
    reading("reactor_temp", None, "disconnected")
    reading("alarm_overtemp", None, "disconnected")
    [comm] = eng.active()
    assert (comm["channel"], comm["condition"], comm["state"]) == ("*", COMM, UNACK)
    assert comm["message"] == "synth not communicating"
    # The status shows the engine's alarm beside the instrument's state, and an alarm channel
    # once (the engine's, not also the derived one).
    status = {"instruments": {"synth": {"state": "backoff", "last_error": "refused", "channels": {
        "alarm_overtemp": {"quality": "GOOD", "value": 1.0, "reason": None}}}}}  # fmt: skip
    reading("alarm_overtemp", 1.0)
    alarms = compute_alarms(status, [eng.status_alarms])
    assert sorted(a["subject"] for a in alarms) == ["synth", "synth/*", "synth/alarm_overtemp"]
    assert next(a for a in alarms if a["subject"] == "synth/alarm_overtemp").get("id")
    [overtemp] = [a for a in eng.active() if a["condition"] == ON]
    eng.acknowledge(overtemp["id"], actor="op", comment="checked")
    reading("alarm_overtemp", 0.0)
    reading("reactor_temp", None, "parse_error")  # a bad frame is not a lost link
    reading("reactor_temp", 25.0)
    [back] = eng.active()
    assert back["state"] == RTN_UNACK  # returned, and waits for acknowledgement
    eng.acknowledge(back["id"], actor="op", comment="cable reseated")
    assert eng.active() == []
    assert eng.unacknowledged() == 0
