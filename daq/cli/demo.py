"""``daq demo``: simulators for a whole hot cell plus the daemon, with live output.

The cell is ``config/demo.toml``; :data:`SIMULATION` says how each of its instruments is
simulated. Each simulator listens on 127.0.0.1 on a free port and the instrument's config is
pointed at it before the daemon starts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.resources
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from daq import logs
from daq.cli import runs, signing, simulate, tlc
from daq.cli.argtypes import seconds
from daq.configfile.load import Config, load_config
from daq.daemon import Daemon
from daq.errors import ConfigError, DaqError
from daq.journal.codec import ReadingRecord
from daq.journal.feed import FeedBatch, read_range
from daq.journal.journal import connect
from daq.journal.reader import JournalReader
from daq.journal.verify import verify_journal
from daq.model import Quality, Reading
from daq.physics import display_activity
from daq.timefmt import clock_time, set_site_zone, zone, zone_label
from simulators.base import Listener

NAME = "demo"
HELP = "simulate a whole hot cell and run the daemon on it, showing live readings and a summary"

_REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"


@dataclasses.dataclass(frozen=True)
class SimSpec:
    """How the demo simulates one instrument of ``config/demo.toml``."""

    kind: str
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    faults: dict[str, float] = dataclasses.field(default_factory=dict)
    listen: str = "tcp://127.0.0.1:0"


SIMULATION: dict[str, SimSpec] = {
    "dc-vdc404": SimSpec(
        "veenstra-vdc404",
        {"nuclide": "Lu-177", "activity_mbq": "7400", "interval_s": "1.0"},
        # One dropped byte in fifty lines: the demo shows how a bad frame is recorded.
        {"drop": 0.02},
    ),
    "dc-crc35r": SimSpec(
        "capintec-crc35r",
        {"chambers": "2", "nuclide": "Lu177,Lu177", "activity_mbq": "7400"},
        # One reply in forty with a bad checksum: recorded BAD with the raw frame.
        {"badsum": 0.025},
    ),
    "dc-vik202": SimSpec("comecer-vik202", {"nuclide": "F-18", "activity_mbq": "15000"}),
    # The synthesis model over OPC UA, one run in about 2.5 min; now and then a value arrives
    # with a Bad StatusCode (a sensor failure), journaled BAD with the status name.
    "synth-opcua": SimSpec(
        "synth-opcua",
        {"time_scale": "11", "nuclide": "Lu-177", "activity_mbq": "15000", "update_s": "0.25"},
        {"bad_status": 0.002},
        listen="opc.tcp://127.0.0.1:0",
    ),
    # A 5-minute strip scanned in 3 s (time_scale 0.01), true RCP 96.5 %.
    "tlc-1": SimSpec("rtlc-scanner", {"product": "lu177-psma", "rcp": "96.5", "time_scale": "0.01"}),
    # 1620 s of synthesis sequence (idle included) at time_scale 11: one run in about 2.5 min.
    "synth-modbus": SimSpec(
        "synth-modbus", {"time_scale": "11", "nuclide": "Lu-177", "activity_mbq": "15000"}
    ),
}


def attach(instrument: Any, listener: Listener) -> Any:
    """Point an instrument's config at a running simulator."""
    if getattr(instrument, "kind", None) == "opcua":
        return instrument.model_copy(update={"url": listener.url})
    if hasattr(instrument, "port"):
        return instrument.model_copy(update={"port": listener.url})
    raise DaqError(f"demo: cannot attach {instrument.name} ({instrument.kind}) to a simulator")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--duration",
        type=seconds,
        default=None,
        metavar="S",
        help="stop after S seconds (default: Ctrl-C)",
    )
    p.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="where the journal goes")
    p.add_argument("--config", type=Path, default=None, help="the demo cell (default config/demo.toml)")
    p.add_argument(
        "--every",
        type=seconds,
        default=1.0,
        metavar="S",
        help="show each channel at most every S seconds",
    )
    p.add_argument("--seed", type=int, default=1, help="simulator seed")
    p.add_argument(
        "--api-port", type=int, default=None, metavar="PORT",
        help=f"the live page's port on 127.0.0.1 (default {DEFAULT_API_PORT}, or a free one if it is busy)",
    )  # fmt: skip
    p.add_argument(
        "--influx-url",
        default=None,
        metavar="URL",
        help="also forward the readings to this InfluxDB v2 write API (InfluxDB, VictoriaMetrics...)",
    )
    p.add_argument("--influx-bucket", default="hotcell", metavar="NAME", help="bucket (default hotcell)")
    p.add_argument("--influx-org", default="hotcell-daq", metavar="NAME", help="organisation")
    p.add_argument("--influx-token-env", default=None, metavar="VAR", help="variable holding the token")
    p.add_argument(
        "--influx-precision",
        default="ns",
        choices=("ns", "us", "ms", "s"),
        help="timestamp precision the server keeps (VictoriaMetrics: ms)",
    )


def _with_influx(cfg: Config, args: argparse.Namespace) -> Config:
    """The demo cell with one ``[[sinks]]`` entry forwarding to ``--influx-url``."""
    from pydantic import ValidationError

    from daq.forward.config import InfluxSink

    try:
        sink = InfluxSink(
            name="demo-influx",
            kind="influxdb",
            url=args.influx_url,
            org=args.influx_org,
            bucket=args.influx_bucket,
            token_env=args.influx_token_env,
            precision=args.influx_precision,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--influx-{err['loc'][0]}: {err['msg']} (got {err.get('input')!r})") from None
    return Config(cfg.model.model_copy(update={"sinks": [sink]}), path=cfg.path, text=cfg.text)


#: The live page's usual port; ``daq demo`` takes a free one when another program holds it.
DEFAULT_API_PORT = 8470
#: The demo-only token: set when the variable the demo config names is unset.
DEMO_TOKEN = "demo"  # noqa: S105 (a published demo value, not a secret)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _with_api_port(cfg: Config, requested: int | None) -> Config:
    """The demo's API on ``requested``, else on its configured port if free, else on a free one."""
    api = cfg.model.api
    if not api.enabled:
        return cfg
    if requested is not None:
        if not 0 <= requested <= 65535:
            raise DaqError(f"--api-port {requested}: expected 0 to 65535")
        port = requested
    else:
        port = api.port if _port_free(api.port) else 0
    return Config(
        cfg.model.model_copy(update={"api": api.model_copy(update={"port": port})}),
        path=cfg.path,
        text=cfg.text,
    )


def _default_config() -> Path:
    """``config/demo.toml`` of a checkout, else the copy the wheel carries as package data.

    The wheel installs ``config/*.toml`` as ``daq/data/config/`` (pyproject.toml), on the file
    system, so the path is real and the demo's ``map_file`` keys resolve next to it.
    """
    if _REPO_CONFIG.exists():
        return _REPO_CONFIG
    return Path(str(importlib.resources.files("daq").joinpath("data", "config", "demo.toml")))


class LivePrinter:
    """Prints committed readings as aligned columns, throttled per channel; non-GOOD always."""

    COLOURS: ClassVar[dict[Quality, str]] = {
        Quality.GOOD: "",
        Quality.UNCERTAIN: "\x1b[33m",
        Quality.BAD: "\x1b[31m",
    }

    def __init__(self, every_s: float, out: Any = sys.stdout):
        self.every_s = every_s
        self.out = out
        self.colour = out.isatty()
        self._last: dict[tuple[str, str], float] = {}

    def show(self, r: Reading) -> None:
        key = (r.instrument, r.channel)
        now = time.monotonic()
        if r.quality is Quality.GOOD and now - self._last.get(key, -1e9) < self.every_s:
            return
        self._last[key] = now
        stamp = clock_time(r.acq_ns)
        unit = r.unit
        if r.value is None:
            value = "-"
        elif unit == "Bq":
            value, unit = display_activity(r.value)
        else:
            value = f"{r.value:.6g}"
        extra = ""
        if r.attrs and "reported_value" in r.attrs:
            a = r.attrs
            figure = a.get("reported_text", a["reported_value"])  # as displayed
            extra = f" ({figure} {a.get('reported_unit', '')}, {a.get('nuclide', '')})"
        elif r.attrs and r.attrs.get("text"):
            extra = f" ({r.attrs['text']})"  # a state's name, e.g. a synthesis step
        reason = f" {r.reason}" if r.reason else ""
        line = (
            f"{stamp}  {r.instrument:<14} {r.channel:<20} {value:>14} {unit:<6} "
            f"{r.quality.name:<9}{reason}{extra}"
        )
        if self.colour and r.quality is not Quality.GOOD:
            line = f"{self.COLOURS[r.quality]}{line}\x1b[0m"
        print(line, file=self.out, flush=True)


async def _print_live(daemon: Daemon, printer: LivePrinter) -> None:
    """Print what the journal commits, from its live feed; readings the printer fell behind on
    (a gap) are read back from the journal, so none is left out."""
    journal = daemon.journal
    assert journal is not None
    with journal.feed.subscribe(10_000, "demo printer") as sub:
        while not sub.closed:
            for item in await sub.get():
                if isinstance(item, FeedBatch):
                    for r in item.readings:
                        printer.show(r)
                    continue
                for rec in await asyncio.to_thread(_journal_range, journal.path, item.after_id, item.last_id):
                    printer.show(rec.reading)


def _journal_range(path: Path, after_id: int, last_id: int) -> list[ReadingRecord]:
    conn = connect(path, read_only=True)
    try:
        return read_range(conn, after_id, last_id=last_id, limit=last_id - after_id)
    finally:
        conn.close()


async def start_simulators(cfg: Config, *, seed: int) -> tuple[Config, list[tuple[str, SimSpec, Listener]]]:
    """Start the simulator :data:`SIMULATION` declares for each instrument of ``cfg``.

    Returns ``cfg`` with every instrument pointed at its simulator, and ``(instrument, spec,
    listener)`` for each; the caller closes the listeners. On failure, those already started
    are closed before the error propagates.
    """
    started: list[tuple[str, SimSpec, Listener]] = []
    instruments = []
    try:
        for inst in cfg.instruments:
            spec = SIMULATION.get(inst.name)
            if spec is None:
                raise DaqError(f"demo: no simulator declared for instrument {inst.name!r}")
            listener = await simulate.start(
                spec.kind, spec.listen, seed=seed, faults=spec.faults, options=spec.options
            )
            started.append((inst.name, spec, listener))
            instruments.append(attach(inst, listener))
    except BaseException:
        for _, _, listener in started:
            await listener.close()
        raise
    return cfg.with_instruments(instruments), started


async def _demo(cfg: Config, args: argparse.Namespace) -> None:
    cfg, started = await start_simulators(cfg, seed=args.seed)
    listeners = [listener for _, _, listener in started]
    for name, spec, listener in started:
        print(f"simulator {spec.kind:<18} for {name:<14} at {listener.url}", flush=True)
    try:
        daemon = Daemon(cfg, seed=args.seed)
        printer = LivePrinter(args.every)
        printers: list[asyncio.Task[None]] = []

        async def on_ready(d: Daemon) -> None:
            api = d.services.get("api")
            api_url = getattr(api, "url", None)
            if api is not None and not api_url:
                print(f"live page: not serving yet ({getattr(api, 'error', None)}); retrying", flush=True)
            if api_url:
                token_env = cfg.model.api.token_env
                print(f"live page: {api_url}/", flush=True)
                print(f"  try:     DAQ_API={api_url} daq status   (or daq tail)", flush=True)
                if token_env and os.environ.get(token_env) == DEMO_TOKEN:
                    print(
                        f"  control: DAQ_API={api_url} DAQ_API_TOKEN={DEMO_TOKEN} daq runs annotate "
                        "'vial 1 dispensed' --reason demo\n",
                        flush=True,
                    )
            printers.append(asyncio.create_task(_print_live(d, printer), name="demo-printer"))

        print(f"journal: {cfg.daemon.data_dir}/journal.sqlite3 — Ctrl-C to stop", flush=True)
        print(f"times:   {zone_label()}\n", flush=True)
        try:
            await daemon.run(duration_s=args.duration, on_ready=on_ready, install_signals=True)
        finally:
            for t in printers:
                t.cancel()
            await asyncio.gather(*printers, return_exceptions=True)
    finally:
        for listener in listeners:
            await listener.close()


def summary(data_dir: Path) -> str:
    lines = ["", "summary"]
    with JournalReader(data_dir) as reader:
        stats = reader.instrument_summary()
        lines.append(f"  journal: {reader.path}")
    lines.append(f"  {'instrument':<16} {'readings':>9} {'GOOD':>7} {'UNCERT':>7} {'BAD':>6}  events")
    for name, s in sorted(stats.items()):
        q = s["quality"]
        events = ", ".join(f"{k} {v}" for k, v in sorted(s.get("events", {}).items()))
        lines.append(
            f"  {name:<16} {s['rows']:>9} {q['GOOD']:>7} {q['UNCERTAIN']:>7} {q['BAD']:>6}  {events}"
        )
    gaps = sum(s["quality"]["BAD"] for s in stats.values())
    lines.append(f"  BAD records (gaps, bad frames): {gaps}")
    report = verify_journal(data_dir)
    lines.append(f"  hash chains: {'intact' if report.ok else 'FAILED: ' + str(report.problem)}")
    lines.extend(tlc.summary_lines(data_dir))
    lines.extend(runs.summary_lines(data_dir))
    lines.extend(signing.summary_lines(data_dir))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or _default_config()).with_data_dir(args.data_dir)
    set_site_zone(zone(cfg.daemon.timezone))
    if args.influx_url:
        cfg = _with_influx(cfg, args)
    cfg = _with_api_port(cfg, args.api_port)
    if cfg.model.api.token_env:
        os.environ.setdefault(cfg.model.api.token_env, DEMO_TOKEN)
    logs.configure("warning")
    try:
        asyncio.run(_demo(cfg, args))
    except KeyboardInterrupt:
        pass
    print(summary(args.data_dir))
    return 0
