"""The live page in headless Chromium (Debian's ``chromium``), driven over the DevTools protocol:
the page loads, values update, trends draw, a disconnected instrument shows as such, a silent
channel greys out, flags show as chips, values at their channel's resolution, times in the
site's zone, no sideways scrolling at 1024 px, and the whole page turns stale when the daemon stops.

Chromium is required: without ``/usr/bin/chromium`` this test fails (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from daq.api.server import STATIC_DIR
from daq.daemon import Daemon
from daq.journal import JournalReader
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_modbus_map import STEP_NAMES
from tests.helpers import api_daemon, make_config
from tests.test_api import running_daemon

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]  # fmt: skip


class Page:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.ids = itertools.count(1)
        self.exceptions: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        async with asyncio.timeout(30):
            while True:
                msg = await self.ws.receive_json()
                if msg.get("method") == "Runtime.exceptionThrown":
                    self.exceptions.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
                if msg.get("id") == mid:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    return msg["result"]  # type: ignore[no-any-return]

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"page never satisfied: {expression}"
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium (apt-get install -y chromium)"
        )
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.returncode is None, (
                f"chromium exited: {(tmp_path / 'chromium.log').read_text()[-2000:]}"
            )
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json(content_type=None)
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                p = Page(ws)
                await p.call("Runtime.enable")
                await p.call("Page.enable")
                yield p
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()


ROW = '[data-instrument="dc1"] tr[data-channel="activity"]'
VALUE = 'document.querySelector(\'[data-instrument="dc1"] tr[data-channel="activity"] .value\')?.textContent'


async def test_live_page_shows_values_trends_and_a_disconnected_instrument(
    data_dir: Path, tmp_path: Path
) -> None:
    async with (
        running_daemon(data_dir, interval_s=0.2, dead_instrument=True) as (daemon, url, sim),
        chromium(tmp_path) as page,
    ):
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=720, deviceScaleFactor=1, mobile=False
        )
        await page.call("Page.navigate", url=url + "/")
        await page.wait_for("document.readyState === 'complete' && document.title.includes('hotcell-daq')")
        first = await page.wait_for(f"(v => v && v !== '–' && v)({VALUE})")
        changed = await page.wait_for(f"(v => v && v !== {json.dumps(first)} && v)({VALUE})")
        assert changed != first
        unit = await page.js(
            'document.querySelector(\'[data-instrument="dc1"] tr[data-channel="activity"] .unit\').textContent'
        )
        assert unit.endswith("Bq")
        await page.wait_for(
            'Number(document.querySelector(\'[data-instrument="dc1"] tr[data-channel="activity"] canvas\').dataset.points) > 3'
        )
        await page.wait_for("document.querySelector('#link')?.textContent === 'live'")
        dc1 = await page.js(
            "(c => [c.dataset.state, c.classList.contains('state-down'), c.querySelector('.state').textContent])"
            "(document.querySelector('[data-instrument=\"dc1\"]'))"
        )
        assert dc1 == ["connected", False, "connected"]
        await page.wait_for(
            "document.querySelector('[data-instrument=\"dead\"]')?.classList.contains('state-down')"
        )
        dead_state = await page.js("document.querySelector('[data-instrument=\"dead\"] .state').textContent")
        assert dead_state.startswith("disconnected")
        alarms = await page.js("document.querySelector('#alarms').textContent")
        assert "dead: not connected" in alarms
        assert "dc1" not in alarms
        assert "no active run" in await page.js("document.querySelector('#process').textContent")
        await daemon.services["runs"].open_run(  # type: ignore[attr-defined]
            batch="B-042", product="Lu-PSMA", nuclide="Lu-177", operator="jdoe", actor="test"
        )
        await page.wait_for("document.querySelector('#process').textContent.includes('B-042')")
        shot = await page.call("Page.captureScreenshot", format="png")
        (tmp_path / "live.png").write_bytes(__import__("base64").b64decode(shot["data"]))
        # The instrument goes silent: its channel greys out once older than stale_after_s (2 s),
        # while the page keeps counting its age.
        assert await page.js(f"document.querySelector({ROW!r}).classList.contains('stale')") is False
        await sim.close()
        await page.wait_for(f"document.querySelector({ROW!r}).classList.contains('stale')", timeout=10)
        assert page.exceptions == []


SYNTH_CHANNELS: list[dict[str, Any]] = [
    {"name": "cell_pressure", "table": "input", "address": 4, "type": "float32", "unit": "Pa", "decimals": 1},
    {"name": "dose_rate", "table": "input", "address": 16, "type": "float32", "unit": "uSv/h"},
    {"name": "step_number", "table": "input", "address": 18, "type": "uint16",
     "enum": {str(i): name for i, name in enumerate(STEP_NAMES)}},
    {"name": "valve_1", "table": "coil", "address": 0},
    {"name": "door_closed", "table": "discrete", "address": 1},
]  # fmt: skip


@contextlib.asynccontextmanager
async def synth_daemon(data_dir: Path) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon reading a Modbus synthesizer simulator (a few channels of each kind), in the
    site zone Europe/Vienna, with the API (token in ``$DAQ_TEST_PAGE_TOKEN``) on a free port and
    a limit the dose rate is always above."""
    sim = SynthModbusSimulator(seed=3, options={"time_scale": "50"})
    listener = await sim.serve("tcp://127.0.0.1:0")
    instrument = {
        "name": "synth", "kind": "modbus", "port": listener.url, "period_s": 0.2, "timeout_s": 0.15,
        "channels": SYNTH_CHANNELS,
    }  # fmt: skip
    cfg = make_config(
        data_dir, [instrument], f'[api]\nport = 0\ntoken_env = "DAQ_TEST_PAGE_TOKEN"\n{LIMIT}',
        daemon={"site": "test-site", "cell": "test-cell", "timezone": "Europe/Vienna"},
    )  # fmt: skip
    try:
        async with api_daemon(cfg) as (daemon, url):
            yield daemon, url
    finally:
        await listener.close()


LIMIT = """
[[alarms.limits]]
instrument = "synth"
channel = "dose_rate"
high = -1.0
deadband = 0.1
on_delay_s = 0.3
severity = "high"
message = "dose rate above -1 uSv/h"
"""
TOKEN = "page-test-token"


def vienna_offset(ms: float) -> str:
    offset = datetime.fromtimestamp(ms / 1000, ZoneInfo("Europe/Vienna")).strftime("%z")
    return f"{offset[:3]}:{offset[3:]}"


def synth(what: str, channel: str, part: str = "") -> str:
    """A JS expression: the element of channel ``channel`` of ``synth`` (``what``: tr or .chip)."""
    selector = f'[data-instrument="synth"] {what}[data-channel="{channel}"] {part}'.strip()
    return f"document.querySelector({json.dumps(selector)})"


def shown_value(element: str) -> str:
    """A JS expression: the text of ``element`` (a JS expression) once it shows a value, falsy
    while it is missing or shows a gap ("–": a poll slot missed on a loaded machine leaves one
    until the next poll). For :meth:`wait_for`."""
    return f"(v => v && v !== '–' && v)(({element})?.textContent)"


@pytest.mark.slow
async def test_live_page_chips_states_resolution_zone_alarm_ack_and_stale_when_the_daemon_stops(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAQ_TEST_PAGE_TOKEN", TOKEN)
    async with chromium(tmp_path) as page:
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1024, height=768, deviceScaleFactor=1, mobile=False
        )
        async with synth_daemon(data_dir) as (_, url):
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 20
                while True:  # until every channel's last reading is a value from the device
                    async with http.get(url + "/api/status") as resp:
                        status = await resp.json()
                    read = status["instruments"]["synth"]["channels"]
                    # A poll slot missed on a loaded machine leaves a BAD record (no value, no
                    # state name) as a channel's last reading until the next poll.
                    if len(read) == len(SYNTH_CHANNELS) and all(
                        c["quality"] == "GOOD" for c in read.values()
                    ):
                        break
                    assert time.monotonic() < deadline, status["instruments"]["synth"]
                    await asyncio.sleep(0.1)
            assert status["daemon"]["timezone"] == "Europe/Vienna"
            channels = status["instruments"]["synth"]["channels"]
            assert channels["cell_pressure"]["decimals"] == 1  # configured
            assert channels["dose_rate"]["decimals"] == 2  # the unit's default
            assert channels["valve_1"]["kind"] == "flag"
            assert channels["step_number"]["kind"] == "state"
            assert channels["step_number"]["steps"] is True
            assert channels["cell_pressure"]["steps"] is False
            assert channels["step_number"]["text"] in STEP_NAMES

            await page.call("Page.navigate", url=url + "/")
            await page.wait_for("document.querySelector('#link')?.textContent === 'live'")
            # Flags are chips (no number, no trend row), states show their name.
            chip = await page.wait_for(
                f"(c => c && /^valve_1 (ON|off)$/.test(c.textContent) && c.className)({synth('.chip', 'valve_1')})"
            )
            assert chip in ("chip on", "chip off"), chip
            assert await page.js(f"{synth('tr', 'valve_1')} === null")
            assert await page.wait_for(f"{synth('.chip', 'door_closed')}?.textContent")
            step = await page.wait_for(shown_value(synth("tr", "step_number", ".value")))
            assert step in STEP_NAMES
            assert (
                await page.wait_for(
                    shown_value("document.querySelector('#process [data-field=\"step\"] .v')")
                )
                in STEP_NAMES
            )
            # Values at their channel's resolution.
            pressure = await page.wait_for(shown_value(synth("tr", "cell_pressure", ".value")))
            assert re.fullmatch(r"-?\d+\.\d", pressure), pressure
            dose = await page.wait_for(shown_value(synth("tr", "dose_rate", ".value")))
            assert re.fullmatch(r"-?\d+\.\d\d", dose), dose
            # No sideways scrolling at 1024 px, nor inside a card.
            widths = await page.js(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                " ...[...document.querySelectorAll('.instrument')].map(c => c.scrollWidth - c.clientWidth)]"
            )
            assert widths[0] <= widths[1], widths
            assert all(w <= 0 for w in widths[2:]), widths
            # Trends have a time axis and hover values, in the site's zone with its offset.
            await page.wait_for(f"Number({synth('tr', 'cell_pressure', 'canvas')}.dataset.points) > 3")
            box = await page.js(
                f"(r => [r.left + r.width - 3, r.top + 10])({synth('tr', 'cell_pressure', 'canvas')}"
                ".getBoundingClientRect())"
            )
            await page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
            tip = await page.wait_for("(t => !t.hidden && t.textContent)(document.querySelector('#tip'))")
            offset = vienna_offset(time.time() * 1000)
            # The point under the pointer may be a gap (a poll timed out on a loaded machine):
            # then no value, and its quality.
            assert re.match(r"\d\d:\d\d:\d\d[+-]\d\d:\d\d  (-?\d+\.\d Pa( UNCERTAIN)?|– Pa BAD)$", tip), tip
            assert offset in tip, tip
            assert await page.js("document.body.classList.contains('stale')") is False
            # The limit alarm is in the banner; the operator pastes the token once and acknowledges it.
            # (A loaded machine may add a communication alarm of a late poll beside it.)
            alarm_id = await page.wait_for(
                "[...document.querySelectorAll('#alarm-list li[data-alarm-id]')].find(li =>"
                " li.querySelector('button.ack') && li.textContent.includes('synth/dose_rate'))?.dataset.alarmId"
            )
            text = await page.js(f"document.querySelector('[data-alarm-id=\"{alarm_id}\"]').textContent")
            assert "synth/dose_rate: dose rate above -1 uSv/h" in text, text
            assert f"since {text.split('since ')[1][:8]}{offset}" in text, text
            await page.js(
                f"(t => {{ t.value = {json.dumps(TOKEN)}; t.dispatchEvent(new Event('change')); }})"
                "(document.querySelector('#token'))"
            )
            await page.js("document.querySelector('#ack-actor').value = 'jdoe'")
            await page.js("document.querySelector('#ack-comment').value = 'seen on the page'")
            assert await page.js("document.querySelector('#token').hidden") is True
            await page.js(f"document.querySelector('[data-alarm-id=\"{alarm_id}\"] button.ack').click()")
            await page.wait_for(
                f"document.querySelector('[data-alarm-id=\"{alarm_id}\"]')?.classList.contains('acked')"
            )
            assert "acknowledged by jdoe" in await page.js(
                f"document.querySelector('[data-alarm-id=\"{alarm_id}\"]').textContent"
            )
            assert await page.js(f"sessionStorage.getItem('hotcell-daq-api-token') === {json.dumps(TOKEN)}")
        with JournalReader(data_dir) as reader:
            audit = [a for a in reader.audit() if a["action"] == "alarm_acknowledged"]
        assert [(a["subject"], a["actor"], a["detail"]["comment"]) for a in audit] == [
            (alarm_id, "jdoe", "seen on the page")
        ]
        # The daemon has stopped: within a few seconds the whole page says so.
        stopped = time.monotonic()
        await page.wait_for("document.body.classList.contains('stale')", timeout=10)
        assert time.monotonic() - stopped < 8
        banner = await page.js("(b => !b.hidden && b.textContent)(document.querySelector('#stale'))")
        assert re.match(r"STALE since \d\d:\d\d:\d\d[+-]\d\d:\d\d", banner), banner
        assert offset in banner, banner
        assert await page.js("document.querySelector('#link').textContent") == "daemon not answering"
        assert page.exceptions == []


def test_page_needs_no_network_beyond_the_daemon() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        for needle in ("http://", "https://", "//cdn", "@import"):
            assert needle not in text, f"{path.name} refers to {needle}: the line PC may have no internet"
