"""The synthesizer's Modbus register map: the process model's values laid out in registers
(:class:`UnitImage`, what the server of :mod:`simulators.synth_modbus` answers from), and the
same map as the driver's channel entries (:func:`register_map`, :func:`register_map_toml`).

The map of every unit (addresses zero-based; ``config/synth-modbus-map.toml`` is the
same map as a driver config, every field documented):

================  =========  ===============================================================
table             address    content
================  =========  ===============================================================
input registers   0 to 17    float32 process values, 2 registers each, in :data:`FLOATS` order
input registers   100 +2i    float32 ``aux_NNN`` channels (``--set extra_channels=N``, N <= 200)
holding           0          uint16 step number (0 = idle; names in :data:`STEP_NAMES`)
holding           1          uint16 batch (cycle) counter
holding           2 to 3     uint32 seconds into the current step
holding           4          uint16 status word: bit 0 sequence running, 1 over-temperature
                             alarm, 2 over-pressure alarm, 3 door closed
holding           5          int16 cell pressure in 0.1 Pa (as an analog I/O module gives it)
holding           6 to 9     float64 process time, seconds since the simulator started
holding           10 to 11   float32 reactor set point, degC (writable, kept)
coils             0 to 7     valve 1 to 8 open
coils             100        remote hold request (writable, kept)
discrete inputs   0 to 3     sequence running, over-temperature alarm, over-pressure alarm,
                             door closed
================  =========  ===============================================================

Floats and 32-bit integers use the word order of ``--set word_order=big|little`` (default
big: high word first, each register high byte first, "ABCD"). Values refresh from the
model's ``snapshot()`` every ``update_s`` (default 0.1 s). Writes to anything but the two
writable addresses answer exception 2 (illegal data address), as a PLC's read-only area does.
"""

from __future__ import annotations

import struct
from typing import Any

import tomli_w

from simulators.synthesis import STEPS, VALVES, SynthesisProcess

#: Float32 process values in input registers 0, 2, 4, ...
FLOATS: tuple[str, ...] = (
    "reactor_temp",
    "reactor_pressure",
    "cell_pressure",
    "gas_flow",
    "probe_vial",
    "probe_reactor",
    "probe_spe",
    "probe_product",
    "dose_rate",
)
AUX_BASE = 100
MAX_EXTRA = 200
DISCRETES: tuple[str, ...] = ("sequence_running", "alarm_overtemp", "alarm_pressure", "door_closed")
STEP_NAMES: tuple[str, ...] = tuple(name for name, _ in STEPS)
SETPOINT_ADDRESS = 10
HOLD_COIL = 100
COIL_BITS = 112  # coils 0..111: the valves and the hold request
HOLDING_COUNT = 12


def words(value: float, fmt: str, word_order: str) -> list[int]:
    hi_first = list(struct.unpack(f">{struct.calcsize(fmt) // 2}H", struct.pack(fmt, value)))
    return hi_first if word_order == "big" else hi_first[::-1]


def pack_bits(bits: list[bool]) -> list[int]:
    """Bits to registers, bit 0 first, 16 per register (how pymodbus stores bit blocks)."""
    regs = []
    for i in range(0, len(bits), 16):
        reg = 0
        for j, on in enumerate(bits[i : i + 16]):
            if on:
                reg |= 1 << j
        regs.append(reg)
    return regs


class UnitImage:
    """The register images of one unit, rebuilt from its process model."""

    def __init__(self, process: SynthesisProcess, extra: int, word_order: str):
        self.process = process
        self.extra = extra
        self.word_order = word_order
        self.input = [0] * (AUX_BASE + 2 * max(extra, 1))
        self.holding = [0] * HOLDING_COUNT
        self.holding[SETPOINT_ADDRESS : SETPOINT_ADDRESS + 2] = words(95.0, ">f", word_order)
        self.coils = [False] * COIL_BITS
        self.discretes = [False] * 16
        self.refresh()

    def refresh(self) -> None:
        snap = self.process.snapshot()
        wo = self.word_order
        regs = self.input
        for i, name in enumerate(FLOATS):
            regs[2 * i : 2 * i + 2] = words(float(snap[name]), ">f", wo)
        for i in range(1, self.extra + 1):
            a = AUX_BASE + 2 * (i - 1)
            regs[a : a + 2] = words(float(snap[f"aux_{i:03d}"]), ">f", wo)
        cycle, _step, into, _duration = self.process.position()
        self.holding[0] = int(snap["step_number"])
        self.holding[1] = cycle & 0xFFFF
        self.holding[2:4] = words(int(into), ">I", wo)
        status = 0
        for bit, name in enumerate(DISCRETES):
            if snap[name]:
                status |= 1 << bit
        self.holding[4] = status
        self.holding[5] = words(max(-32768, min(32767, round(float(snap["cell_pressure"]) * 10))), ">h", wo)[
            0
        ]
        self.holding[6:10] = words(self.process.process_time(), ">d", wo)
        for i in range(VALVES):
            self.coils[i] = bool(snap[f"valve_{i + 1}"])
        for i, name in enumerate(DISCRETES):
            self.discretes[i] = bool(snap[name])

    def block(self, table: str) -> list[int]:
        """The table as pymodbus stores it (registers; bits packed 16 to a register)."""
        if table == "i":
            return self.input
        if table == "h":
            return self.holding
        if table == "c":
            return pack_bits(self.coils)
        return pack_bits(self.discretes)


def register_map(*, extra_channels: int = 0, word_order: str = "big") -> list[dict[str, Any]]:
    """The map of one unit as the driver's channel entries (name, table, address, type...).

    ``config/synth-modbus-map.toml`` is this list for ``extra_channels = 0``, documented.
    """
    units = {"reactor_temp": "degC", "reactor_pressure": "kPa", "cell_pressure": "Pa", "gas_flow": "mL/min",
             "dose_rate": "uSv/h"}  # fmt: skip
    out: list[dict[str, Any]] = []
    for i, name in enumerate(FLOATS):
        out.append({"name": name, "table": "input", "address": 2 * i, "type": "float32",
                    "unit": units.get(name, "MBq")})  # fmt: skip
    for i in range(1, extra_channels + 1):
        out.append({"name": f"aux_{i:03d}", "table": "input", "address": AUX_BASE + 2 * (i - 1),
                    "type": "float32", "unit": "V"})  # fmt: skip
    out += [
        {"name": "step_number", "table": "holding", "address": 0, "type": "uint16",
         "enum": {str(i): n for i, n in enumerate(STEP_NAMES)}},
        {"name": "batch_counter", "table": "holding", "address": 1, "type": "uint16"},
        {"name": "step_elapsed", "table": "holding", "address": 2, "type": "uint32", "unit": "s"},
        {"name": "alarm_overtemp", "table": "holding", "address": 4, "type": "bit", "bit": 1},
        {"name": "alarm_pressure", "table": "holding", "address": 4, "type": "bit", "bit": 2},
        {"name": "cell_pressure_io", "table": "holding", "address": 5, "type": "int16", "scale": 0.1,
         "unit": "Pa"},
        {"name": "process_time", "table": "holding", "address": 6, "type": "float64", "unit": "s"},
        {"name": "reactor_setpoint", "table": "holding", "address": SETPOINT_ADDRESS, "type": "float32",
         "unit": "degC", "writable": True},
    ]  # fmt: skip
    out += [{"name": f"valve_{i + 1}", "table": "coil", "address": i} for i in range(VALVES)]
    out.append({"name": "remote_hold", "table": "coil", "address": HOLD_COIL, "writable": True})
    out.append({"name": "sequence_running", "table": "discrete", "address": 0})
    out.append({"name": "door_closed", "table": "discrete", "address": 3})
    for entry in out:
        if entry.get("type") in ("uint32", "float32", "float64"):
            entry["word_order"] = word_order
    return out


def register_map_toml(
    *, unit_ids: tuple[int, ...] = (1,), extra_channels: int = 0, word_order: str = "big"
) -> str:
    """The register map of ``unit_ids`` as a TOML ``channels`` array: a map file of its own
    (``map_file``), or the ``channels`` key of an ``[[instruments]]`` table.

    For benchmarks and generated configs (``extra_channels = 77`` gives 100 channels per
    synthesizer). With several unit ids, channel names get a ``u<ID>.`` prefix.
    """
    channels = []
    for uid in unit_ids:
        prefix = f"u{uid}." if len(unit_ids) > 1 else ""
        for entry in register_map(extra_channels=extra_channels, word_order=word_order):
            channels.append({**entry, "name": prefix + entry["name"], "unit_id": uid})
    return tomli_w.dumps({"channels": channels})
