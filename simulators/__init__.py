"""Instrument simulators speaking the real wire protocols, with a seed and fault injection.

:data:`SIMULATORS` maps a simulator kind (``daq simulate --list``) to its class; a kind
equal to a driver kind simulates that instrument. Simulators never import ``drivers``.
"""

from __future__ import annotations

from simulators.base import Simulator
from simulators.biodex_atomlab500 import Atomlab500Simulator
from simulators.capintec_crc35r import Crc35rSimulator
from simulators.comecer_vik202 import Vik202Simulator
from simulators.line import LineSimulator
from simulators.rtlc_scanner import RtlcScannerSimulator
from simulators.synth_modbus import SynthModbusSimulator
from simulators.synth_opcua import SynthOpcUaSimulator
from simulators.veenstra_vdc404 import Vdc404Simulator

SIMULATORS: dict[str, type[Simulator]] = {
    s.kind: s
    for s in (
        Vdc404Simulator,
        Crc35rSimulator,
        Atomlab500Simulator,
        Vik202Simulator,
        LineSimulator,
        SynthModbusSimulator,
        SynthOpcUaSimulator,
        RtlcScannerSimulator,
    )
}

__all__ = ["SIMULATORS", "Simulator"]
