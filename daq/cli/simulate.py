"""``daq simulate KIND --listen URL``: one instrument simulator, standalone."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from urllib.parse import urlsplit

from daq.cli.argtypes import seconds
from daq.errors import DaqError
from simulators import SIMULATORS
from simulators.base import Listener, SimulatorError, parse_assignments

NAME = "simulate"
HELP = "run one instrument simulator speaking its real wire protocol (--list shows the kinds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", help="simulator kind (see --list)")
    p.add_argument("--list", action="store_true", help="list the simulator kinds and exit")
    p.add_argument(
        "--listen",
        default="tcp://127.0.0.1:0",
        help="tcp://HOST:PORT (reach it with socket://HOST:PORT), pty (prints the device path), "
        "or the kind's own scheme (e.g. opc.tcp://)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (noise, faults)")
    p.add_argument("--fault", action="append", metavar="NAME=VALUE", help="inject a fault (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="options", help="simulator option")
    p.add_argument("--duration", type=seconds, default=None, metavar="S", help="stop after S seconds")


def check_listen(listen: str) -> None:
    """Refuse a ``--listen`` address that is not on this machine's loopback, or a bad port.

    Simulators are test equipment: they answer anyone who connects, so they never listen on an
    address another machine can reach.
    """
    if listen == "pty":
        return
    parts = urlsplit(listen)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise DaqError(f"--listen {listen!r}: {exc}") from None
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DaqError(
            f"--listen {listen!r}: simulators listen on loopback only (127.0.0.1, ::1 or localhost)"
        )


async def start(
    kind: str,
    listen: str,
    *,
    seed: int = 0,
    faults: dict[str, float] | None = None,
    options: dict[str, str] | None = None,
) -> Listener:
    """Start simulator ``kind`` at ``listen``; raises :class:`DaqError` for bad settings."""
    cls = SIMULATORS.get(kind)
    if cls is None:
        raise DaqError(f"unknown simulator {kind!r}; known: {', '.join(SIMULATORS)}")
    check_listen(listen)
    try:
        sim = cls(seed=seed, faults=faults, options=options)
        return await sim.serve(listen)
    except SimulatorError as exc:
        raise DaqError(f"simulate {kind}: {exc}") from exc


async def _serve(args: argparse.Namespace) -> None:
    try:
        faults = {k: float(v) for k, v in parse_assignments(args.fault, "--fault").items()}
        options = parse_assignments(args.options, "--set")
    except (SimulatorError, ValueError) as exc:
        raise DaqError(f"simulate {args.kind}: {exc}") from exc
    listener = await start(args.kind, args.listen, seed=args.seed, faults=faults, options=options)
    print(f"{args.kind} listening on {listener.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.duration is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.duration)
            except TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        await listener.close()


def main(args: argparse.Namespace) -> int:
    if args.list or not args.kind:
        for kind, cls in SIMULATORS.items():
            print(f"{kind:<22} {cls.description}")
        return 0 if args.list else 2
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    return 0
