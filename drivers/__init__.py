"""Instrument drivers, one module per protocol; :data:`REGISTRY` maps ``kind`` to driver.

To add an instrument: write ``drivers/<kind>.py`` with a :class:`~drivers.base.Driver`
subclass and its config model, and list it in ``_DRIVERS`` below.
"""

from __future__ import annotations

from drivers.base import Driver
from drivers.biodex_atomlab500 import Atomlab500Driver
from drivers.capintec_crc35r import Crc35rDriver
from drivers.comecer_vik202 import Vik202Driver
from drivers.line import LineDriver
from drivers.modbus import ModbusDriver
from drivers.opcua import OpcUaDriver
from drivers.rtlc_scanner import RtlcScannerDriver
from drivers.veenstra_vdc404 import Vdc404Driver

_DRIVERS: list[type[Driver]] = [
    Vdc404Driver,
    Crc35rDriver,
    Atomlab500Driver,
    Vik202Driver,
    LineDriver,
    ModbusDriver,
    OpcUaDriver,
    RtlcScannerDriver,
]

REGISTRY: dict[str, type[Driver]] = {d.kind: d for d in _DRIVERS}

__all__ = ["REGISTRY", "Driver"]
