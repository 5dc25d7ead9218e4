"""The live page in headless Chromium (Debian's ``chromium``), driven over the DevTools protocol:
the page loads, values update, trends draw, a disconnected instrument shows as such.

Chromium is required: without ``/usr/bin/chromium`` this test fails (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daq.api.server import STATIC_DIR
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


VALUE = 'document.querySelector(\'[data-instrument="dc1"] tr[data-channel="activity"] .value\')?.textContent'


async def test_live_page_shows_values_trends_and_a_disconnected_instrument(
    data_dir: Path, tmp_path: Path
) -> None:
    async with (
        running_daemon(data_dir, interval_s=0.2, dead_instrument=True) as (daemon, url, _),
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
        await page.wait_for("document.querySelector('#link').textContent === 'live'")
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
        assert "no active run" in await page.js("document.querySelector('#run').textContent")
        await daemon.services["runs"].open_run(  # type: ignore[attr-defined]
            batch="B-042", product="Lu-PSMA", nuclide="Lu-177", operator="jdoe", actor="test"
        )
        await page.wait_for("document.querySelector('#run').textContent.includes('B-042')")
        shot = await page.call("Page.captureScreenshot", format="png")
        (tmp_path / "live.png").write_bytes(__import__("base64").b64decode(shot["data"]))
        assert page.exceptions == []


def test_page_needs_no_network_beyond_the_daemon() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        for needle in ("http://", "https://", "//cdn", "@import"):
            assert needle not in text, f"{path.name} refers to {needle}: the line PC may have no internet"
