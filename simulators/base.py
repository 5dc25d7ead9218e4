"""What every serial-instrument simulator shares: listening, sessions and fault injection.

A simulator speaks the instrument's real bytes over raw TCP (``tcp://127.0.0.1:PORT``,
reachable with pyserial's ``socket://`` URL) or a PTY (``pty``; the slave path is the
"serial port"). It never imports a driver: the two meet only on the wire.

Faults (``--fault NAME=VALUE``), each a probability per frame unless stated:

======================  ===========================================================
``drop``                drop one byte of a frame
``garble``              replace one byte of a frame with a random byte
``badsum``              corrupt the checksum (framed protocols)
``split``               send a frame in two writes with a pause between
``merge``               hold a frame back and send it glued to the next one
``no_reply``            swallow a reply (polled protocols) or a line (streaming ones)
``delay_s``             seconds to wait before every reply (a slow instrument)
``disconnect_after_s``  close each connection after this many seconds (TCP only)
``freeze``              1 = the displayed value stops changing (a stale readout)
======================  ===========================================================
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from daq.clock import Clock, SystemClock

COMMON_FAULTS: dict[str, str] = {
    "drop": "probability per frame of dropping one byte",
    "garble": "probability per frame of replacing one byte",
    "split": "probability per frame of sending it in two writes",
    "merge": "probability per frame of gluing it to the next frame",
    "no_reply": "probability of swallowing a reply or line",
    "delay_s": "seconds to wait before each reply",
    "disconnect_after_s": "close each connection after this many seconds",
    "freeze": "1 = the value stops changing",
}


class SimulatorError(ValueError):
    """Bad simulator settings (unknown fault or option)."""


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SimulatorError(f"{what} {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


class FaultyWire:
    """Writes frames to a stream, applying the configured faults."""

    def __init__(self, writer: asyncio.StreamWriter, faults: Mapping[str, float], rng: random.Random):
        self.writer = writer
        self.faults = faults
        self.rng = rng
        self._held = b""

    def _hit(self, name: str) -> bool:
        p = self.faults.get(name, 0.0)
        return p > 0 and self.rng.random() < p

    async def send(self, frame: bytes) -> None:
        delay = self.faults.get("delay_s", 0.0)
        if delay:
            await asyncio.sleep(delay)
        if self._hit("no_reply"):
            return
        if self._hit("drop") and len(frame) > 1:
            i = self.rng.randrange(len(frame))
            frame = frame[:i] + frame[i + 1 :]
        if self._hit("garble") and frame:
            i = self.rng.randrange(len(frame))
            frame = frame[:i] + bytes([self.rng.randrange(256)]) + frame[i + 1 :]
        if self._hit("merge"):
            self._held += frame
            return
        frame, self._held = self._held + frame, b""
        if self._hit("split") and len(frame) > 1:
            cut = self.rng.randrange(1, len(frame))
            self.writer.write(frame[:cut])
            await self.writer.drain()
            await asyncio.sleep(0.05)
            frame = frame[cut:]
        self.writer.write(frame)
        await self.writer.drain()


class Listener:
    """A running simulator endpoint. ``url`` is what a driver's ``port`` should be."""

    def __init__(self, url: str, closer: Any):
        self.url = url
        self._closer = closer

    async def close(self) -> None:
        await self._closer()


class Simulator(abc.ABC):
    """Base of every simulator: a seed, faults, options, a clock, and :meth:`serve`."""

    kind: ClassVar[str]
    description: ClassVar[str]
    #: Faults this simulator understands beyond :data:`COMMON_FAULTS`.
    extra_faults: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        *,
        seed: int = 0,
        faults: Mapping[str, float] | None = None,
        options: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ):
        self.rng = random.Random(seed)
        self.clock = clock or SystemClock()
        known = {**COMMON_FAULTS, **self.extra_faults}
        self.faults: dict[str, float] = {}
        for name, value in (faults or {}).items():
            if name not in known:
                raise SimulatorError(f"unknown fault {name!r} for {self.kind}; known: {', '.join(known)}")
            self.faults[name] = float(value)
        self.configure(dict(options or {}))
        self.requests: list[bytes] = []

    def configure(self, options: dict[str, str]) -> None:
        """Apply ``--set KEY=VALUE`` options; raise :class:`SimulatorError` on unknown keys.

        Subclasses pop the options they know, then call :meth:`reject_unknown`."""
        self.reject_unknown(options)

    def reject_unknown(self, options: dict[str, str]) -> None:
        if options:
            raise SimulatorError(f"unknown option(s) for {self.kind}: {', '.join(options)}")

    @abc.abstractmethod
    async def serve(self, listen: str) -> Listener:
        """Start serving at ``listen`` and return the running endpoint."""


class SerialSimulator(Simulator):
    """Base of the serial-instrument simulators. Subclasses implement :meth:`session`."""

    @abc.abstractmethod
    async def session(self, reader: asyncio.StreamReader, wire: FaultyWire) -> None:
        """Serve one connection until it closes."""

    async def _run_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire = FaultyWire(writer, self.faults, self.rng)
        limit = self.faults.get("disconnect_after_s")
        try:
            if limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.session(reader, wire), limit)
            else:
                await self.session(reader, wire)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def serve(self, listen: str) -> Listener:
        """Start listening on ``tcp://HOST:PORT`` (port 0 picks a free one) or ``pty``."""
        if listen == "pty":
            return await self._serve_pty()
        parts = urlsplit(listen)
        if parts.scheme != "tcp" or parts.hostname is None:
            raise SimulatorError(f"--listen {listen!r}: expected tcp://HOST:PORT or pty")
        sessions: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The session runs in a task of its own so that close() can cancel it without
            # the server's connection callback seeing a cancelled handler.
            task = asyncio.create_task(self._run_session(reader, writer), name=f"sim:{self.kind}")
            sessions.add(task)
            try:
                await asyncio.wait([task])
            finally:
                sessions.discard(task)

        server = await asyncio.start_server(handle, parts.hostname, parts.port or 0, reuse_address=True)
        host, port = server.sockets[0].getsockname()[:2]

        async def close() -> None:
            server.close()
            for task in list(sessions):
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
            await server.wait_closed()

        return Listener(f"socket://{host}:{port}", close)

    async def _serve_pty(self) -> Listener:
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", buffering=0)
        )
        write_transport, write_protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
        # The simulator keeps the slave open too, so the master never sees EIO when a driver
        # closes and reopens the port (as a real device stays powered across reconnects).
        task = asyncio.create_task(self._run_session(reader, writer), name=f"sim-pty:{self.kind}")

        async def close() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            read_transport.close()
            with contextlib.suppress(OSError):
                os.close(slave)

        return Listener(path, close)


def float_option(options: dict[str, str], key: str, default: float) -> float:
    raw = options.pop(key, None)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SimulatorError(f"option {key}={raw!r}: expected a number") from None
