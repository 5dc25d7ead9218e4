"""A radiolabelling synthesis as a process model, shared by the Modbus and OPC UA simulators.

The model follows a cassette-based [177Lu]Lu-PSMA-617 (or [225Ac]Ac-PSMA) run: load
reagents, transfer the activity to the reactor, heat to about 95 °C and hold, cool, solid-phase
purification, formulation, dispense. It exposes reactor temperature and pressure, cell
pressure, gas flow, four activity probes (vial, reactor, SPE cartridge, product) that decay
with the nuclide's half-life, valve states, the step number and name, a "sequence running"
flag, alarms and a door interlock. ``extra_channels`` adds auxiliary analog channels so a
simulator can present 100 channels, as a large PLC does.

Time comes from an injected clock: the step sequence runs on the monotonic clock (scaled by
``time_scale``), decay on the wall clock. The sequence repeats after ``idle_s`` so a demo
shows several runs.
"""

from __future__ import annotations

import dataclasses
import math
import random

from daq.clock import Clock, SystemClock
from daq.physics import decay, nuclide

Value = float | int | bool | str


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    type: str  # "float" | "int" | "bool" | "str"
    unit: str
    description: str


#: (step name, duration in seconds of process time)
STEPS: tuple[tuple[str, float], ...] = (
    ("idle", 0.0),
    ("load_reagents", 30.0),
    ("transfer_activity", 60.0),
    ("heat", 120.0),
    ("hold", 900.0),
    ("cool", 180.0),
    ("spe_purification", 120.0),
    ("formulation", 90.0),
    ("dispense", 60.0),
    ("done", 30.0),
)
STEP_NUMBERS = {name: i for i, (name, _) in enumerate(STEPS)}

VALVES = 8

CORE_CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("reactor_temp", "float", "degC", "reactor temperature"),
    ChannelSpec("reactor_pressure", "float", "kPa", "reactor gauge pressure"),
    ChannelSpec("cell_pressure", "float", "Pa", "hot-cell pressure relative to the room (negative)"),
    ChannelSpec("gas_flow", "float", "mL/min", "nitrogen flow"),
    ChannelSpec("probe_vial", "float", "MBq", "activity probe at the source vial"),
    ChannelSpec("probe_reactor", "float", "MBq", "activity probe at the reactor"),
    ChannelSpec("probe_spe", "float", "MBq", "activity probe at the SPE cartridge"),
    ChannelSpec("probe_product", "float", "MBq", "activity probe at the product vial"),
    ChannelSpec("dose_rate", "float", "uSv/h", "dose rate outside the cell"),
    ChannelSpec("step_number", "int", "", "sequence step number (0 = idle)"),
    ChannelSpec("step_name", "str", "", "sequence step name"),
    ChannelSpec("sequence_running", "bool", "", "true while a synthesis sequence runs"),
    ChannelSpec("alarm_overtemp", "bool", "", "reactor over-temperature alarm"),
    ChannelSpec("alarm_pressure", "bool", "", "reactor over-pressure alarm"),
    ChannelSpec("door_closed", "bool", "", "cell door interlock closed"),
    *(ChannelSpec(f"valve_{i}", "bool", "", f"valve {i} open") for i in range(1, VALVES + 1)),
)

# Valves open per step (1-based): the transfer line, the reactor vent, SPE load, product line...
_VALVES_BY_STEP = {
    "load_reagents": {1, 2},
    "transfer_activity": {3, 4},
    "heat": set(),
    "hold": set(),
    "cool": {5},
    "spe_purification": {6, 7},
    "formulation": {7, 8},
    "dispense": {8},
}


class SynthesisProcess:
    """The process state at the clock's current time; call :meth:`snapshot` to sample it."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Clock | None = None,
        nuclide_symbol: str = "Lu-177",
        activity_mbq: float = 15_000.0,
        time_scale: float = 1.0,
        idle_s: float = 30.0,
        extra_channels: int = 0,
        yield_fraction: float = 0.92,
    ):
        self.clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.nuclide = nuclide(nuclide_symbol).symbol
        self.activity_mbq = activity_mbq
        self.time_scale = time_scale
        self.idle_s = idle_s
        self.yield_fraction = yield_fraction
        self.extra = extra_channels
        self.channels: tuple[ChannelSpec, ...] = CORE_CHANNELS + tuple(
            ChannelSpec(f"aux_{i:03d}", "float", "V", f"auxiliary analog input {i}")
            for i in range(1, extra_channels + 1)
        )
        self.frozen = False
        self._frozen_snapshot: dict[str, Value] | None = None
        self._start_mono = self.clock.monotonic_ns()
        self._start_wall = self.clock.time_ns()
        self._cycle = sum(d for _, d in STEPS[1:]) + idle_s

    # -- where are we --------------------------------------------------------------

    def process_time(self) -> float:
        """Seconds of process time since the model started."""
        return (self.clock.monotonic_ns() - self._start_mono) / 1e9 * self.time_scale

    def position(self) -> tuple[int, str, float, float]:
        """(cycle number, step name, seconds into the step, step duration)."""
        t = self.process_time()
        cycle, t = divmod(t, self._cycle)
        if t < self.idle_s:
            return int(cycle), "idle", t, self.idle_s
        t -= self.idle_s
        for name, duration in STEPS[1:]:
            if t < duration:
                return int(cycle), name, t, duration
            t -= duration
        return int(cycle), "done", 0.0, STEPS[-1][1]

    # -- physics ---------------------------------------------------------------------

    def _activity_now(self, cycle: int) -> float:
        """Total activity (MBq) of this cycle's batch, decayed since the cycle's start."""
        cycle_start_wall = self._start_wall + int(cycle * self._cycle / self.time_scale * 1e9)
        elapsed = (self.clock.time_ns() - cycle_start_wall) / 1e9
        return decay(self.activity_mbq, self.nuclide, elapsed)

    def _fractions(self, step: str, frac: float) -> tuple[float, float, float, float]:
        """Share of the activity at (vial, reactor, spe, product) at ``frac`` through ``step``."""
        y = self.yield_fraction
        if step in ("idle", "load_reagents"):
            return 1.0, 0.0, 0.0, 0.0
        if step == "transfer_activity":
            return 1.0 - 0.98 * frac, 0.98 * frac, 0.0, 0.0
        if step in ("heat", "hold", "cool"):
            return 0.02, 0.98, 0.0, 0.0
        if step == "spe_purification":
            return 0.02, 0.98 * (1 - frac), 0.98 * frac, 0.0
        if step == "formulation":
            # The product is eluted from the cartridge into the formulation (product) vial.
            return 0.02, 0.0, 0.98 - y * frac, y * frac
        return 0.02, 0.0, 0.98 - y, y  # done

    def _temperature(self, step: str, frac: float) -> float:
        ambient, target = 25.0, 95.0
        if step == "heat":
            return ambient + (target - ambient) * (1 - math.exp(-5 * frac))
        if step == "hold":
            return target + 0.5 * math.sin(frac * 40)
        if step == "cool":
            return 40.0 + (target - 40.0) * math.exp(-4 * frac)
        if step in ("spe_purification", "formulation", "dispense"):
            return 40.0 - 10.0 * frac if step == "dispense" else 40.0
        return ambient

    def snapshot(self) -> dict[str, Value]:
        """Every channel's value now (noise included). ``frozen`` repeats the last snapshot."""
        if self.frozen and self._frozen_snapshot is not None:
            return dict(self._frozen_snapshot)
        cycle, step, into, duration = self.position()
        frac = 0.0 if duration <= 0 else min(1.0, into / duration)
        total = self._activity_now(cycle)
        vial, reactor, spe, product = self._fractions(step, frac)
        g = self.rng.gauss
        temp = self._temperature(step, frac) + g(0, 0.1)
        pressure = 101.3 + (temp - 25.0) * 0.9 + g(0, 0.2) + (40.0 if step == "transfer_activity" else 0.0)
        running = step != "idle"
        values: dict[str, Value] = {
            "reactor_temp": round(temp, 2),
            "reactor_pressure": round(pressure, 2),
            "cell_pressure": round(-60.0 + g(0, 1.5), 1),
            "gas_flow": round(
                (25.0 if step in ("transfer_activity", "spe_purification") else 2.0) + g(0, 0.3), 2
            ),
            "probe_vial": round(max(0.0, total * vial * (1 + g(0, 0.01))), 2),
            "probe_reactor": round(max(0.0, total * reactor * (1 + g(0, 0.01))), 2),
            "probe_spe": round(max(0.0, total * spe * (1 + g(0, 0.01))), 2),
            "probe_product": round(max(0.0, total * product * (1 + g(0, 0.01))), 2),
            "dose_rate": round(max(0.0, 0.4 + g(0, 0.05)), 3),
            "step_number": STEP_NUMBERS[step],
            "step_name": step,
            "sequence_running": running,
            "alarm_overtemp": temp > 110.0,
            "alarm_pressure": pressure > 250.0,
            "door_closed": True,
        }
        open_valves = _VALVES_BY_STEP.get(step, set())
        for i in range(1, VALVES + 1):
            values[f"valve_{i}"] = i in open_valves
        for i in range(1, self.extra + 1):
            values[f"aux_{i:03d}"] = round(2.5 + math.sin(self.process_time() / 30 + i) + g(0, 0.01), 4)
        self._frozen_snapshot = values
        return values
