"""The OPC UA driver against the synthesis simulator's real asyncua server.

One simulator (server start-up costs seconds) serves every test of this module: the tests
share its event loop (``loop_scope="module"``) and each one undoes the fault it injects.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from asyncua import ua
from asyncua.ua.uatypes import UInt32
from hypothesis import given
from hypothesis import strategies as st

from daq.clock import SystemClock
from daq.configfile.load import load_config, parse_config
from daq.daemon import Daemon
from daq.errors import ConfigError, ConnectError
from daq.journal import JournalReader
from daq.model import Quality
from drivers.opcua import OpcUaConfig, OpcUaDriver
from drivers.opcua.conversion import convert
from drivers.opcua.security import password
from simulators import synth_opcua
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from simulators.synthesis import CORE_CHANNELS
from tests.helpers import collect, config_text, free_port, make_config, wait_until

#: The tests that talk to the shared server run in its (module-wide) event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[1]
ANALOG = ["reactor_temp", "reactor_pressure", "cell_pressure", "gas_flow", "dose_rate"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[tuple[SynthOpcUaSimulator, str]]:
    simulator = SynthOpcUaSimulator(seed=5, options={"update_s": "0.05", "time_scale": "20"})
    # A port of this worker's own (tests.helpers.port_range): the restart tests stop the server
    # and start it again on the same port, which nothing else may take meanwhile.
    listener = await simulator.serve(f"opc.tcp://127.0.0.1:{free_port()}")
    yield simulator, listener.url
    await listener.close()


def opcua_config(url: str, channels: list[str] = ANALOG, **extra: Any) -> OpcUaConfig:
    nodes = [{"channel": c, "node_id": node_id(c), "unit": "u"} for c in channels]
    fields: dict[str, Any] = {"name": "synth1", "kind": "opcua", "url": url, "nodes": nodes}
    fields.update(extra)
    return OpcUaConfig(**fields)


# -- against the server ----------------------------------------------------------------


@module_loop
async def test_values_carry_source_and_server_time_beside_arrival_time(sim: Any) -> None:
    _, url = sim
    driver = OpcUaDriver(opcua_config(url), SystemClock())
    info = await driver.connect()
    assert "Synthesis simulator" in info.model
    rows = await collect(driver, lambda rs: len({r.channel for r in rs}) == len(ANALOG) and len(rs) >= 30)
    await driver.close()
    assert all(r.quality is Quality.GOOD for r in rows)
    for r in rows:
        assert r.attrs is not None
        assert r.attrs["source_ns"] > 0
        assert r.attrs["server_ns"] > 0
        assert r.device_ns == r.attrs["source_ns"]
        # Stamped on arrival: after the server stamped it, within a generous bound.
        assert r.acq_ns >= r.attrs["server_ns"] - 50_000_000
        assert r.acq_ns - r.attrs["server_ns"] < 5_000_000_000
    temps = [r.value for r in rows if r.channel == "reactor_temp"]
    assert all(t is not None and 10 < t < 130 for t in temps)
    assert [r.acq_ns for r in rows] == sorted(r.acq_ns for r in rows)


@module_loop
async def test_text_bool_and_int_nodes(sim: Any) -> None:
    _, url = sim
    cfg = opcua_config(url, [], nodes=[
        {"channel": "step_name", "browse_path": "/2:Synth/2:step_name",
         "states": {name: i for i, name in enumerate(["idle", "load_reagents", "transfer_activity", "heat",
                                                      "hold", "cool", "spe_purification", "formulation",
                                                      "dispense", "done"])}},
        {"channel": "step_number", "browse_path": "/2:Synth/2:step_number"},
        {"channel": "door_closed", "node_id": node_id("door_closed")},
    ])  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    await driver.connect()
    rows = await collect(
        driver, lambda rs: {r.channel for r in rs} == {"step_name", "step_number", "door_closed"}
    )
    await driver.close()
    by = {r.channel: r for r in rows}
    assert by["door_closed"].value == 1.0
    assert by["step_name"].quality is Quality.GOOD
    assert by["step_name"].attrs is not None
    assert isinstance(by["step_name"].attrs["text"], str)
    assert by["step_name"].value is not None
    assert by["step_number"].value is not None
    assert float(by["step_number"].value).is_integer()


@module_loop
async def test_bad_status_is_journaled_bad_never_the_last_good_value(sim: Any, data_dir: Path) -> None:
    simulator, url = sim
    inst = {
        "name": "synth1", "kind": "opcua", "url": url, "backoff_initial_s": 0.1, "backoff_cap_s": 1.0,
        "nodes": [
            {"channel": "reactor_pressure", "node_id": node_id("reactor_pressure"), "unit": "kPa"},
            {"channel": "reactor_temp", "node_id": node_id("reactor_temp"), "unit": "degC"},
        ],
    }  # fmt: skip
    text = config_text(data_dir, [inst])
    daemon = Daemon(parse_config(text, path="test.toml"))
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: bool(daemon.supervisors) and daemon.supervisors[0].readings >= 10)
    simulator.set_status("reactor_pressure", "BadSensorFailure")
    sup = daemon.supervisors[0]
    try:
        await wait_until(
            lambda: (
                sup.last_values.get("reactor_pressure") is not None
                and sup.last_values["reactor_pressure"].quality is Quality.BAD
            )
        )
        count = sup.readings
        await wait_until(lambda: sup.readings >= count + 10)  # the other node keeps coming
    finally:
        simulator.set_status("reactor_pressure", None)
    await wait_until(lambda: sup.last_values["reactor_pressure"].quality is Quality.GOOD)
    daemon.request_stop()
    await task
    with JournalReader(data_dir) as r:
        rows = r.readings()
    bad = [x for x in rows if x["channel"] == "reactor_pressure" and x["quality"] == Quality.BAD]
    assert bad
    assert all(x["value"] is None for x in bad)
    assert {x["reason"] for x in bad} == {"BadSensorFailure"}
    assert bad[0]["attrs"]["status"] == "0x808C0000"  # BadSensorFailure, Part 6 StatusCodes.csv
    first_bad = rows.index(bad[0])
    assert any(x["channel"] == "reactor_temp" and x["quality"] == Quality.GOOD for x in rows[first_bad:])


@module_loop
async def test_uncertain_status_keeps_the_value(sim: Any) -> None:
    simulator, url = sim
    driver = OpcUaDriver(opcua_config(url, ["cell_pressure"]), SystemClock())
    await driver.connect()
    simulator.set_status("cell_pressure", "UncertainLastUsableValue")
    try:
        rows = await collect(driver, lambda rs: any(r.quality is Quality.UNCERTAIN for r in rs))
    finally:
        simulator.set_status("cell_pressure", None)
        await driver.close()
    r = next(r for r in rows if r.quality is Quality.UNCERTAIN)
    assert r.reason == "UncertainLastUsableValue"
    assert r.value is not None


@module_loop
async def test_one_missing_node_does_not_stop_the_others(sim: Any) -> None:
    _, url = sim
    cfg = opcua_config(url, ["reactor_temp"], nodes=[
        {"channel": "reactor_temp", "node_id": node_id("reactor_temp")},
        {"channel": "ghost", "node_id": "ns=2;s=Synth.no_such_node"},
        {"channel": "lost", "browse_path": "/2:Synth/2:no_such_node"},
        {"channel": "gas_flow", "browse_path": "/2:Synth/2:gas_flow"},
    ])  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    await driver.connect()
    rows = await collect(
        driver, lambda rs: all(sum(r.channel == c for r in rs) >= 5 for c in ("gas_flow", "reactor_temp"))
    )
    await driver.close()
    bad = {r.channel: r for r in rows if r.quality is Quality.BAD}
    assert set(bad) == {"ghost", "lost"}
    assert bad["ghost"].reason == "node_unavailable"
    assert bad["ghost"].attrs is not None
    assert "BadNodeIdUnknown" in bad["ghost"].attrs["error"]
    assert bad["lost"].attrs is not None
    assert "BadNoMatch" in bad["lost"].attrs["error"]
    assert sum(r.channel == "reactor_temp" and r.quality is Quality.GOOD for r in rows) >= 5


@module_loop
async def test_missing_nodes_are_logged_once_across_retries_and_reconnects_and_listed(sim: Any) -> None:
    _, url = sim
    cfg = opcua_config(url, [], node_retry_s=0.1, nodes=[
        {"channel": "reactor_temp", "node_id": node_id("reactor_temp")},
        {"channel": "ghost", "node_id": "ns=2;s=Synth.no_such_node"},
        {"channel": "lost", "browse_path": "/2:Synth/2:no_such_node"},
    ])  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):  # a reconnect does not log them again
            await driver.connect()
            rows = await collect(driver, lambda rs: sum(r.channel == "ghost" for r in rs) >= 3)
            problems = driver.problems()
            await driver.close()
            assert sum(r.channel == "lost" for r in rows) >= 2  # BAD at every retry, as before
    unavailable = [e for e in logs if e["event"] == "opcua node unavailable"]
    assert sorted(e["channel"] for e in unavailable) == ["ghost", "lost"]
    assert "BadNoMatch" in next(e["error"] for e in unavailable if e["channel"] == "lost")
    assert set(problems) == {"unavailable_nodes"}
    assert set(problems["unavailable_nodes"]) == {"ghost", "lost"}
    assert "BadNodeIdUnknown" in problems["unavailable_nodes"]["ghost"]
    assert problems["unavailable_nodes"]["lost"].startswith(
        "/2:Synth/2:no_such_node: browse path does not resolve"
    )


@module_loop
async def test_a_sampling_interval_the_server_revised_is_in_the_device_info(sim: Any) -> None:
    _, url = sim
    # asyncua's server samples at the publishing interval whatever is asked.
    cfg = opcua_config(url, [], publishing_interval_ms=100, sampling_interval_ms=100, nodes=[
        {"channel": "reactor_temp", "node_id": node_id("reactor_temp"), "sampling_interval_ms": 20},
        {"channel": "gas_flow", "node_id": node_id("gas_flow")},
    ])  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    try:
        info = await driver.connect()
    finally:
        await driver.close()
    assert info.extra["revised_sampling_ms"] == {"reactor_temp": 100.0}


@module_loop
async def test_node_removed_and_readded_is_bad_then_followed_again(sim: Any) -> None:
    simulator, url = sim
    driver = OpcUaDriver(opcua_config(url, ["gas_flow", "reactor_temp"], node_retry_s=0.3), SystemClock())
    await driver.connect()
    await collect(driver, lambda rs: any(r.channel == "gas_flow" for r in rs))
    await simulator.remove_node("gas_flow")
    try:
        rows = await collect(
            driver, lambda rs: any(r.channel == "gas_flow" and r.quality is Quality.BAD for r in rs)
        )
        # While it is gone, every retry that fails is recorded too.
        rows += await collect(driver, lambda rs: any(r.reason == "node_unavailable" for r in rs))
    finally:
        await simulator.restore_node("gas_flow")
    rows += await collect(
        driver, lambda rs: any(r.channel == "gas_flow" and r.quality is Quality.GOOD for r in rs)
    )
    await driver.close()
    bad = [r for r in rows if r.channel == "gas_flow" and r.quality is Quality.BAD]
    assert bad[0].reason == "BadNodeIdUnknown"
    assert all(r.value is None for r in bad)
    assert any(r.channel == "reactor_temp" and r.quality is Quality.GOOD for r in rows)


@module_loop
async def test_buffer_overflow_is_recorded_as_a_gap(sim: Any) -> None:
    _, url = sim
    # One queued value per node on the server: a publish response carries at most one
    # notification per node (5), so only readings left unread overflow the buffer of 10. With
    # the usual queue of 10 a response after the loop stood still (a loaded machine) carries
    # up to 50, and would overflow the buffer however promptly it is read.
    driver = OpcUaDriver(opcua_config(url, max_pending=10, queue_size=1), SystemClock())
    await driver.connect()
    # Nobody reads until changes were lost (counted as they are dropped), however long the
    # server takes to send more than 10.
    # (A publish sequence gap, which a loaded machine can cause, is also recorded as lost
    # notifications; the wait is for the buffer's own overflow.)
    await wait_until(lambda: any("full" in d[4] for d in driver.notifications.dropped.values()))
    rows = await driver.read()
    overflow = [r for r in rows if r.reason == "overflow"]
    assert overflow
    for r in overflow:
        assert r.quality is Quality.BAD
        assert r.value is None
        assert r.attrs is not None
        assert r.attrs["dropped"] >= 1
        assert r.attrs["first_dropped_ns"] <= r.attrs["last_dropped_ns"] == r.acq_ns
    # The buffer held 10 readings: the values as the server sent them (GOOD, or UNCERTAIN when
    # a node's status says so), then the overflow records.
    kept = [r for r in rows if r.reason != "overflow"]
    shown = [(r.channel, r.quality.name, r.reason) for r in rows]
    assert len(kept) == 10, shown
    assert all(r.quality is not Quality.BAD for r in kept), shown
    more = await collect(driver, lambda rs: len(rs) >= 5)
    await driver.close()
    assert all(r.reason != "overflow" for r in more)


@module_loop
async def test_poll_mode_reads_every_period(sim: Any) -> None:
    _, url = sim
    driver = OpcUaDriver(opcua_config(url, ["reactor_temp", "door_closed"], mode="poll", period_s=0.1,
                                      timeout_s=0.05), SystemClock())  # fmt: skip
    await driver.connect()
    rows = await collect(driver, lambda rs: len(rs) >= 10)
    await driver.close()
    assert {r.channel for r in rows} == {"reactor_temp", "door_closed"}
    assert all(r.quality is Quality.GOOD for r in rows)
    stamps = sorted({r.acq_ns for r in rows})
    assert len(stamps) >= 5  # several polls, one stamp each


@module_loop
async def test_close_before_and_after_connect_never_raises(sim: Any) -> None:
    _, url = sim
    driver = OpcUaDriver(opcua_config(url), SystemClock())
    await driver.close()
    with pytest.raises(ConnectError):
        await driver.read()
    await driver.connect()
    await driver.close()
    await driver.close()


@pytest.mark.slow
async def test_standard_address_space_is_built_once_then_loaded_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAQ_SIM_CACHE", str(tmp_path))
    assert not synth_opcua.cache_is_built()
    # Built as a test run's controller builds it before its workers start (the same build a
    # first server makes when it finds no shelf), then published.
    await synth_opcua.build_cache()
    assert synth_opcua.cache_is_built()
    [published] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert published.name.startswith("asyncua-")
    assert (published / "standard-address-space").is_file()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".building-")] == []
    # The second server loads the shelf; a client sees the standard nodes (server build info,
    # namespace array) and the process variables as from a server built in memory.
    simulator = SynthOpcUaSimulator(seed=1)
    second = await simulator.serve("opc.tcp://127.0.0.1:0")
    assert simulator.server is not None
    assert type(simulator.server.iserver.aspace._nodes).__name__ == "LazyLoadingDict"  # from the shelf
    try:
        driver = OpcUaDriver(opcua_config(second.url), SystemClock())
        info = await driver.connect()
        assert "Synthesis simulator" in info.model
        rows = await collect(driver, lambda rs: len({r.channel for r in rs}) == len(ANALOG))
        await driver.close()
        assert all(r.quality is Quality.GOOD for r in rows)
    finally:
        await second.close()


@pytest.mark.slow
async def test_a_cache_directory_that_cannot_be_made_leaves_the_address_space_built_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DAQ_SIM_CACHE", str(blocker / "cache"))
    # Nothing for a test run's controller to build ahead either: the servers build in memory.
    assert synth_opcua.cache_is_built()
    await synth_opcua.build_cache()
    assert not (blocker / "cache").exists()
    simulator = SynthOpcUaSimulator(seed=1)
    listener = await simulator.serve("opc.tcp://127.0.0.1:0")
    try:
        assert simulator.server is not None
        assert type(simulator.server.iserver.aspace._nodes) is dict  # built, not loaded
        driver = OpcUaDriver(opcua_config(listener.url), SystemClock())
        info = await driver.connect()
        assert "Synthesis simulator" in info.model
        await driver.close()
    finally:
        await listener.close()
    assert any("DAQ_SIM_CACHE" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)


@module_loop
async def test_unreachable_server_is_a_connect_error(dead_port: int) -> None:
    driver = OpcUaDriver(opcua_config(f"opc.tcp://127.0.0.1:{dead_port}"), SystemClock())
    with pytest.raises(ConnectError, match="cannot connect"):
        await driver.connect()
    await driver.close()


# -- config ----------------------------------------------------------------------------


def test_shipped_node_map_loads_and_maps_every_simulator_channel() -> None:
    cfg = load_config(REPO / "config" / "synth-opcua-map.toml")
    (inst,) = cfg.instruments
    assert isinstance(inst, OpcUaConfig)
    assert inst.kind == "opcua"
    assert {n.channel for n in inst.nodes} == {c.name for c in CORE_CHANNELS}
    units = {c.name: c.unit for c in CORE_CHANNELS}
    assert all(n.unit == units[n.channel] for n in inst.nodes)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"nodes": [{"channel": "a"}]}, "exactly one of node_id or browse_path"),
        ({"nodes": [{"channel": "a", "node_id": "ns=2;s=x", "browse_path": "/2:x"}]}, "exactly one"),
        ({"nodes": [{"channel": "a", "node_id": "ns=two;x"}]}, "is not a NodeId"),
        ({"nodes": [{"channel": "a", "node_id": "i=1"}, {"channel": "a", "node_id": "i=2"}]}, "mapped twice"),
        ({"url": "http://plc:4840"}, "opc"),
        ({"security": {"mode": "None", "policy": "Basic256Sha256"}}, "takes no policy"),
        ({"security": {"mode": "Sign", "policy": "Basic256Sha256"}}, "needs certificate_file"),
        ({"security": {"mode": "SignAndEncrypt", "policy": "Basic256Sha256", "certificate_file": "c.der",
                       "private_key_file": "k.pem"}}, "server_certificate_file (pin) or trust_list_dir"),
        ({"security": {"mode": "Sign", "policy": "Basic128Rsa15", "certificate_file": "c.der",
                       "private_key_file": "k.pem", "trust_list_dir": "t"}}, "Basic256Sha256"),
        ({"username": "op", "password_env": "PW"}, "need security mode Sign or SignAndEncrypt"),
        ({"password_env": "PW"}, "a password needs a username"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_with_the_key_path(fields: dict[str, Any], expected: str) -> None:
    base = {
        "name": "p",
        "kind": "opcua",
        "url": "opc.tcp://plc:4840",
        "nodes": [{"channel": "a", "node_id": "i=1"}],
    }
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        OpcUaConfig(**{**base, **fields})


def test_inline_password_is_refused_by_the_loader(data_dir: Path) -> None:
    text = make_config(data_dir, []).text + (
        '[[instruments]]\nname = "p"\nkind = "opcua"\nurl = "opc.tcp://plc:4840"\nusername = "op"\n'
        'password = "hunter2"\nnodes = [{channel = "a", node_id = "i=1"}]\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="cell.toml")
    assert info.value.key_path == "instruments[0].password"
    assert "cell.toml" in str(info.value)


def test_config_error_names_the_node_key_path(data_dir: Path) -> None:
    text = make_config(data_dir, []).text + (
        '[[instruments]]\nname = "p"\nkind = "opcua"\nurl = "opc.tcp://plc:4840"\n'
        'nodes = [{channel = "a", node_id = "i=1", queue_size = 0}]\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="cell.toml")
    assert info.value.key_path == "instruments[0].nodes[0].queue_size"


def test_password_from_env_and_from_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one secret reader (daq.secrets) with its rules; a missing secret is a connect
    # failure naming the instrument and the key, which the supervisor records and retries.
    monkeypatch.setenv("OPCUA_PW", "s3cret")
    assert password("OPCUA_PW", None, "plc") == "s3cret"
    (tmp_path / "opcua-pw").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert password(None, "opcua-pw", "plc") == "from-credential"
    assert password(None, None, "plc") is None
    monkeypatch.setenv("OPCUA_PW", "")
    with pytest.raises(ConnectError, match="plc: password_env: environment variable OPCUA_PW"):
        password("OPCUA_PW", None, "plc")
    monkeypatch.delenv("OPCUA_PW")
    with pytest.raises(ConnectError, match="OPCUA_PW is not set"):
        password("OPCUA_PW", None, "plc")
    with pytest.raises(ConnectError, match=r"plc: password_credential: credential file .* does not exist"):
        password(None, "missing", "plc")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConnectError, match="is empty"):
        password(None, "empty", "plc")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConnectError, match="CREDENTIALS_DIRECTORY"):
        password(None, "opcua-pw", "plc")
    assert os.environ.get("OPCUA_PW") is None


def test_default_buffer_is_sized_from_the_map() -> None:
    cfg = opcua_config("opc.tcp://plc:4840", [f"c{i}" for i in range(100)], queue_size=20)
    # 100 nodes x 20 queued values x (5 s / 100 ms) publishes
    assert cfg.pending_limit() == 100 * 20 * 50


# -- value conversion (no server): any DataValue gives a reading, quality from status ----

_variants = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=3),
)


@pytest.mark.fuzz
@given(value=_variants, code=st.integers(min_value=0, max_value=2**32 - 1), ts=st.booleans())
def test_any_datavalue_converts_without_raising(value: Any, code: int, ts: bool) -> None:
    driver = OpcUaDriver(opcua_config("opc.tcp://plc:4840", ["x"]), SystemClock())
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1) if ts else None
    dv = ua.DataValue(ua.Variant(value), StatusCode=ua.StatusCode(UInt32(code)), SourceTimestamp=stamp)  # type: ignore[arg-type]
    out = convert(driver.config.nodes[0], dv, 1, 2, driver.reading)
    reading = out[-1]
    severity = code >> 30
    if severity >= 2:
        assert reading.quality is Quality.BAD
        assert reading.value is None
        assert reading.reason == ua.StatusCode(UInt32(code & 0xFFFF0000)).name
    elif reading.value is not None:
        assert math.isfinite(reading.value)
        assert reading.quality is (Quality.GOOD if severity == 0 else Quality.UNCERTAIN)
    else:
        assert reading.quality is not Quality.GOOD
    assert reading.device_ns == (1_767_225_601_000_000_000 if ts else None)
    assert all(r.acq_ns == 1 and r.mono_ns == 2 for r in out)


def test_simulator_node_map_covers_100_channels() -> None:
    entries = SynthOpcUaSimulator(options={"extra_channels": "77"}).node_map()
    assert len(entries) == 100
    assert len({e["channel"] for e in entries}) == 100
    cfg = opcua_config("opc.tcp://plc:4840", [], nodes=entries)
    assert cfg.nodes[-1].channel == "aux_077"
    assert cfg.nodes[-1].unit == "V"


@pytest.mark.slow
async def test_cli_simulator_with_slow_responses(tmp_path: Path) -> None:
    """``daq simulate synth-opcua`` as a process, every response held back 0.3 s by its relay."""
    from tests.proc import spawn, stop

    port = free_port()
    proc = spawn("simulate", "synth-opcua", "--listen", f"opc.tcp://127.0.0.1:{port}", "--fault", "delay_s=0.3",
                 "--set", "update_s=0.1")  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert f"listening on opc.tcp://127.0.0.1:{port}" in line, line
        driver = OpcUaDriver(opcua_config(f"opc.tcp://127.0.0.1:{port}", ["reactor_temp"], mode="poll",
                                          period_s=1.0, timeout_s=0.9), SystemClock())  # fmt: skip
        await driver.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        rows = await collect(driver, lambda rs: len(rs) >= 2, timeout=15)
        await driver.close()
        assert all(r.quality is Quality.GOOD for r in rows)
        # The second poll's round trip crossed the relay's delay both ways at least once.
        assert loop.time() - started >= 0.3
    finally:
        code, _, err = stop(proc)
    assert code == 0, err


def test_missing_publish_messages_are_recorded_as_a_gap() -> None:
    """A jump in the subscription's sequence numbers: messages the server sent never arrived."""
    driver = OpcUaDriver(opcua_config("opc.tcp://plc:4840", ["a", "b"]), SystemClock())
    n = driver.notifications
    n.reset(driver._items)
    n.by_handle = {1: driver._items[0], 2: driver._items[1]}

    def message(seq: int, value: float) -> ua.PublishResult:
        items = [
            ua.MonitoredItemNotification(ClientHandle=h, Value=ua.DataValue(ua.Variant(value)))
            for h in (1, 2)
        ]
        note = ua.NotificationMessage(
            SequenceNumber=seq, NotificationData=[ua.DataChangeNotification(MonitoredItems=items)]
        )
        return ua.PublishResult(SubscriptionId=1, NotificationMessage=note)

    n.on_publish(message(7, 1.0))
    n.on_publish(message(8, 2.0))
    assert [r.value for r in n.take()] == [1.0, 1.0, 2.0, 2.0]
    n.on_publish(message(11, 3.0))  # 9 and 10 never came
    rows = n.take()
    gaps = [r for r in rows if r.reason == "overflow"]
    assert {r.channel for r in gaps} == {"a", "b"}
    assert all(r.quality is Quality.BAD and r.value is None for r in gaps)
    assert gaps[0].attrs is not None
    assert "sequence jumped from 8 to 11" in gaps[0].attrs["error"]
    assert [r.value for r in rows if r.quality is Quality.GOOD] == [3.0, 3.0]
    # A keep-alive (no data) moves nothing.
    n.on_publish(
        ua.PublishResult(SubscriptionId=1, NotificationMessage=ua.NotificationMessage(SequenceNumber=12))
    )
    assert n.take() == []


@module_loop
async def test_readings_that_arrived_before_a_server_restart_are_returned_first(sim: Any) -> None:
    simulator, url = sim
    driver = OpcUaDriver(opcua_config(url), SystemClock())
    await driver.connect()
    await driver.read()
    # Notifications wait in the driver's buffer, unread: at least the 5 the test reads back
    # (a fixed 0.3 s held none when the loop stood still through it).
    await wait_until(lambda: len(driver.notifications.pending) >= 5)
    restart = asyncio.create_task(simulator.restart(down_s=0.5))
    await wait_until(lambda: driver.notifications.lost is not None, timeout=5)
    rows = await driver.read()
    assert len(rows) >= 5
    assert all(r.quality is Quality.GOOD for r in rows)
    with pytest.raises(ConnectError, match=r"BadShutdown|lost"):
        await driver.read()
    await driver.close()
    await restart
