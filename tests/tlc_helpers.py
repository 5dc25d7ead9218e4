"""Shared pieces of the radio-TLC tests: a validated method and a scanner config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daq.configfile.load import Config, DaqConfigModel
from tests.helpers import make_config

#: These tests need no local API; keep it off so daemons in parallel never share a port.
NO_API = "\n[api]\nenabled = false\n" if "api" in DaqConfigModel.model_fields else ""

#: [177Lu]Lu-PSMA on the simulator's strip: origin at 15 mm, solvent front at 85 mm; the
#: product band near the front, free Lu-177 at the origin, an optional colloid band between.
METHOD_TOML = """
[[tlc.methods]]
name = "lu-psma-itlc"
version = "2"
product = "[177Lu]Lu-PSMA"
origin_mm = 15.0
front_mm = 85.0
limit_percent = 95.0

[tlc.methods.background]
mode = "outside_rois"

[[tlc.methods.rois]]
label = "free"
kind = "free"
rf_from = -0.15
rf_to = 0.2

[[tlc.methods.rois]]
label = "colloid"
kind = "colloid"
rf_from = 0.25
rf_to = 0.52

[[tlc.methods.rois]]
label = "product"
kind = "product"
rf_from = 0.52
rf_to = 1.15
"""


def scanner_config(data_dir: Path, port: str, **extra: Any) -> Config:
    """A one-scanner config using :data:`METHOD_TOML`; ``method=None`` leaves the method out."""
    inst = {"name": "tlc1", "kind": "rtlc-scanner", "port": port, "method": "lu-psma-itlc",
            "backoff_initial_s": 0.1, "backoff_cap_s": 0.5, "home_s": 5.0, "line_margin_s": 5.0,
            **extra}  # fmt: skip
    inst = {k: v for k, v in inst.items() if v is not None}
    return make_config(data_dir, [inst], METHOD_TOML + NO_API)


async def record_scans(data_dir: Path, *specs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a daemon per spec on ``data_dir`` against a simulator and take one scan each.

    A spec holds ``sim`` (simulator options), ``faults``, ``seed``, ``config`` (instrument
    keys) and ``scan`` (start_scan keyword arguments). Returns the outcomes.
    """
    import asyncio

    from daq.daemon import Daemon
    from daq.supervisor import State
    from daq.tlc.service import TlcService
    from simulators.rtlc_scanner import RtlcScannerSimulator
    from tests.helpers import wait_until

    outcomes = []
    for spec in specs:
        sim = RtlcScannerSimulator(
            seed=spec.get("seed", 1),
            faults=spec.get("faults"),
            options={"time_scale": "0", "home_s": "0", **spec.get("sim", {})},
        )
        listener = await sim.serve("tcp://127.0.0.1:0")
        daemon = Daemon(scanner_config(data_dir, listener.url, **spec.get("config", {})))
        task = asyncio.create_task(daemon.run())
        try:
            await wait_until(lambda d=daemon: "tlc" in d.services)  # type: ignore[misc]
            await wait_until(lambda d=daemon: d.supervisors[0].state is State.CONNECTED)  # type: ignore[misc]
            svc = daemon.services["tlc"]
            assert isinstance(svc, TlcService)
            outcomes.append(await svc.scan("tlc1", **spec.get("scan", {})))
        finally:
            daemon.request_stop()
            await task
            await listener.close()
    return outcomes
