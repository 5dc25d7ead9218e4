"""The local API's request validation over real HTTP: Host and Origin (DNS rebinding,
cross-site posts) and out-of-range numbers in queries and bodies."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from daq.api.guard import HostPolicy, json_depth_ok
from tests.helpers import wait_until
from tests.test_api import TOKEN, running_daemon

START = {"batch": "B-001", "product": "Lu-PSMA", "nuclide": "Lu-177", "operator": "jdoe"}


async def test_host_and_origin_are_checked(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAQ_TEST_API_TOKEN", TOKEN)
    api = 'token_env = "DAQ_TEST_API_TOKEN"\nallowed_hosts = ["linepc.lab"]\n'
    async with running_daemon(data_dir, api=api) as (_, url, _), aiohttp.ClientSession() as http:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "linepc.lab", "LINEPC.lab."):
            async with http.get(f"{url}/api/status", headers={"Host": host}) as resp:
                assert resp.status == 200, host
        # DNS rebinding: the browser sends the attacker's name as Host.
        for path in ("/api/status", "/api/readings", "/", "/metrics"):
            async with http.get(f"{url}{path}", headers={"Host": f"evil.example:{port}"}) as resp:
                assert resp.status == 403, path
                assert "DNS rebinding" in (await resp.json())["error"]
        async with http.get(f"{url}/api/status", headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        auth = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "jdoe"}
        # A valid token does not make a cross-origin post acceptable.
        for origin in ("http://evil.example", "null", f"http://evil.example:{port}"):
            async with http.post(f"{url}/api/runs", json=START, headers={**auth, "Origin": origin}) as resp:
                assert resp.status == 403, origin
                assert "cross-origin" in (await resp.json())["error"]
        async with http.get(f"{url}/api/runs/active") as resp:
            assert (await resp.json())["active"] is None  # nothing was started
        # The live page's own origin, and a client that sends no Origin, are fine.
        headers = {**auth, "Origin": f"http://127.0.0.1:{port}"}
        async with http.post(f"{url}/api/runs", json=START, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"{url}/api/runs/active/stop", json={}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()


async def test_out_of_range_numbers_are_400_naming_the_parameter(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAQ_TEST_API_TOKEN", TOKEN)
    api = 'token_env = "DAQ_TEST_API_TOKEN"\nmax_body_bytes = 1048576\n'
    async with running_daemon(data_dir, api=api) as (daemon, url, _), aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.supervisor("dc1").readings >= 5)
        await daemon.journal.flush()  # type: ignore[union-attr]
        cases = [
            ("/api/readings", {"since_ns": "1e26"}, "since_ns"),
            ("/api/readings", {"since_ns": "1" + "0" * 26}, "since_ns"),
            ("/api/readings", {"since_ns": "-5"}, "since_ns"),
            ("/api/readings", {"since": "99999999999999999999d"}, "since"),
            ("/api/readings", {"since": "80000d"}, "since"),
            ("/api/readings", {"limit": "0"}, "limit"),
            ("/api/readings", {"limit": "-1"}, "limit"),
            ("/api/readings", {"limit": "1e3"}, "limit"),
            ("/api/stream", {"since_ns": "1e26"}, "since_ns"),
            ("/api/stream", {"since": "99999999999999999999d"}, "since"),
        ]
        for path, params, name in cases:
            async with http.get(f"{url}{path}", params=params) as resp:
                assert resp.status == 400, (path, params, await resp.text())
                assert (await resp.json())["error"].startswith(f"{name}: "), (path, params)
        async with http.get(f"{url}/api/readings", params={"limit": "2", "since": "5m"}) as resp:
            assert resp.status == 200
            assert len((await resp.json())["readings"]) == 2
        auth = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "jdoe"}
        async with http.post(f"{url}/api/runs", json=START, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        for ts in ("1" + "0" * 30, "1e30", "-1"):
            body = '{"reason": "separation", "ts_ns": ' + ts + "}"
            async with http.post(
                f"{url}/api/runs/active/t0", data=body, headers={**auth, "Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400, (ts, await resp.text())
                assert (await resp.json())["error"].startswith("ts_ns: "), ts
        # 100,000 levels (200 KB, within the body size limit set above): refused for its depth
        # before the parser could recurse that deep.
        deep = "[" * 100_000 + "]" * 100_000
        async with http.post(
            f"{url}/api/runs/active/annotations",
            data=deep,
            headers={**auth, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400
            assert "nests deeper" in (await resp.json())["error"]
        async with http.post(f"{url}/api/runs/active/stop", json={}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()


def test_host_policy_and_depth_rules() -> None:
    policy = HostPolicy("127.0.0.1", ["linepc.lab"])
    assert policy.allows("localhost")
    assert policy.allows("app.localhost")
    assert policy.allows("127.0.0.2")
    assert policy.allows("::1")
    assert policy.allows("linepc.lab")
    assert not policy.allows("localhost.evil.example")
    assert not policy.allows("10.0.0.5")
    assert json_depth_ok('{"a": [1, {"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}')
    assert not json_depth_ok("[" * 33 + "]" * 33)
