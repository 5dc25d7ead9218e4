"""Instrument simulators speaking the real wire protocols, with a seed and fault injection.

:data:`SIMULATORS` maps a simulator kind (``daq simulate --list``) to its class; a kind
equal to a driver kind simulates that instrument. Simulators never import ``drivers``.
"""

from __future__ import annotations

from simulators.base import Simulator
from simulators.veenstra_vdc404 import Vdc404Simulator

SIMULATORS: dict[str, type[Simulator]] = {s.kind: s for s in (Vdc404Simulator,)}

__all__ = ["SIMULATORS", "Simulator"]
