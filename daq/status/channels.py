"""What every display shows of an instrument and its channels: a supervisor's counters and
state, each channel's last value and age, and how the live page draws it (decimals by unit,
flags, states, steps, when a value counts as stale).
"""

from __future__ import annotations

from typing import Any

from daq.model import Quality
from daq.supervisor import Supervisor


def instrument_status(sup: Supervisor) -> dict[str, Any]:
    """One supervisor's counters and state (what every display shows of an instrument)."""
    return {
        "kind": sup.config.kind,
        "state": sup.state.value,
        "readings": sup.readings,
        "reconnects": sup.reconnects,
        "parse_errors": sup.parse_errors,
        "last_error": sup.last_error,
        # What the driver found lasting (starved channels, refused addresses or nodes).
        "problems": sup.driver.problems(),
    }


#: Digits after the decimal point by unit, for channels whose config gives no ``decimals``.
UNIT_DECIMALS = {
    "degC": 1, "K": 1, "kPa": 1, "Pa": 1, "hPa": 1, "bar": 3, "mbar": 1, "mL/min": 1, "L/min": 2,
    "mL": 2, "uL": 0, "%": 1, "MBq": 1, "GBq": 2, "kBq": 0, "mCi": 2, "uCi": 1, "Ci": 3,
    "uSv/h": 2, "mSv/h": 3, "s": 0, "min": 1, "h": 2, "": 0, "counts": 0, "cps": 0, "cpm": 0,
}  # fmt: skip
#: For units not in :data:`UNIT_DECIMALS` (``Bq`` is shown scaled to kBq/MBq/GBq with these).
DEFAULT_DECIMALS = 2
#: Channels named like these with no unit are on/off flags (valves, alarms, doors, sequences)
#: when the map does not say (OPC UA nodes carry no type in the map).
FLAG_WORDS = ("valve", "alarm", "door", "running", "open", "closed", "enabled", "interlock", "flag")


def channel_display(cfg: Any) -> dict[str, dict[str, Any]]:
    """How the live page shows each channel the config declares: ``decimals`` (configured, else
    none, meaning the unit's default), ``kind`` (``flag`` for on/off values, ``state`` for a
    number with state names, ``number``), ``states`` (number to name), ``steps`` (discrete
    values, drawn as steps: states, flags, unscaled integer registers) and, for values reported
    only on change, ``stale_after_s = None`` (never stale by age alone)."""
    out: dict[str, dict[str, Any]] = {}
    for ch in getattr(cfg, "all_channels", None) or []:  # Modbus register map
        kind = "flag" if ch.data_type in ("bool", "bit") else "state" if ch.enum else "number"
        out[ch.name] = {"decimals": ch.decimals, "kind": kind, "states": dict(ch.enum or {})}
        # An unscaled integer register (a counter, a step number) changes in steps.
        if ch.data_type.startswith(("int", "uint")) and ch.scale == 1 and ch.offset == 0:
            out[ch.name]["steps"] = True
    subscribed = getattr(cfg, "mode", None) == "subscribe"
    for node in getattr(cfg, "nodes", None) or []:  # OPC UA node map
        states = {f"{v:g}": text for text, v in node.states.items()}
        kind = "state" if states else "number"
        out[node.channel] = {"decimals": node.decimals, "kind": kind, "states": states}
        if subscribed and not node.poll:
            # Reported on change only: an unchanged value is current while the subscription
            # lives (its watchdog, stale_after_s, drops the connection when the server is silent).
            out[node.channel]["stale_after_s"] = None
    for ch, digits in (getattr(cfg, "decimals", None) or {}).items():
        out.setdefault(ch, {"decimals": None, "kind": "number", "states": {}})["decimals"] = digits
    return out


def _display_of(
    channel: str, unit: str, declared: dict[str, Any] | None, stale_s: float | None
) -> dict[str, Any]:
    d = dict(declared or {"decimals": None, "kind": "number", "states": {}})
    d.setdefault("stale_after_s", stale_s)
    d["steps"] = d.get("steps", False) or d["kind"] != "number"
    if d["decimals"] is None:
        d["decimals"] = UNIT_DECIMALS.get(unit, DEFAULT_DECIMALS)
    if d["kind"] == "number" and not unit and any(w in channel.lower() for w in FLAG_WORDS):
        d["kind"] = "flag"
    return d


def stale_after_s(cfg: Any) -> float | None:
    """How old a channel's last value may be before the page greys it out: the instrument's
    ``stale_after_s`` when it has one, else three poll periods (at least 5 s). ``None`` for a
    radio-TLC scanner: its values are the result of the last scan, not a live measurement."""
    if getattr(cfg, "kind", None) == "rtlc-scanner":
        return None
    given = getattr(cfg, "stale_after_s", None)
    if isinstance(given, int | float):
        return float(given)
    return max(5.0, 3 * float(getattr(cfg, "period_s", 1.0)))


def channel_status(sup: Supervisor, now_ns: int) -> dict[str, Any]:
    """The last value of each channel of one supervisor, its age, and the instrument's details."""
    channels: dict[str, dict[str, Any]] = {}
    ages: list[float] = []
    declared = channel_display(sup.config)
    stale_s = stale_after_s(sup.config)
    for ch, r in sorted(sup.last_values.items()):
        age = round(max(0.0, (now_ns - r.acq_ns) / 1e9), 3)
        ages.append(age)
        text = (r.attrs or {}).get("text")
        channels[ch] = {
            "value": r.value,
            "unit": r.unit,
            "quality": Quality(r.quality).name,
            "reason": r.reason,
            "acq_ns": r.acq_ns,
            "age_s": age,
            # A state's name (a step number's), when the driver knows it.
            "text": text if isinstance(text, str) else None,
            **_display_of(ch, r.unit, declared.get(ch), stale_s),
        }
    return {
        "stale_after_s": stale_s,
        "description": sup.config.description,
        "connects": sup.connects,
        "timeouts": sup.timeouts,
        "last_value_age_s": min(ages) if ages else None,
        "channels": channels,
        "device": sup.device_info.as_dict() if sup.device_info else None,
    }
