"""Shared pieces of the radio-TLC tests: a validated method and a scanner config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daq.config.load import Config, DaqConfigModel
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
rf_from = 0.3
rf_to = 0.55

[[tlc.methods.rois]]
label = "product"
kind = "product"
rf_from = 0.6
rf_to = 1.15
"""


def scanner_config(data_dir: Path, port: str, **extra: Any) -> Config:
    inst = {"name": "tlc1", "kind": "rtlc-scanner", "port": port, "method": "lu-psma-itlc",
            "backoff_initial_s": 0.1, "backoff_cap_s": 0.5, "home_s": 5.0, "line_margin_s": 5.0,
            **extra}  # fmt: skip
    return make_config(data_dir, [inst], METHOD_TOML + NO_API)
