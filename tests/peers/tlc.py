"""Radio-TLC scanner peer, from docs/instruments.md ("Radio-TLC scanner") alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.peers.base import Peer


class TlcScannerPeer(Peer):
    """Answers a start line ``batch,operator,range_mm,time_min`` with one ``<tenths>; <counts>``
    line per position (0.5 mm, 1.0 mm, ... up to ``range_mm``), then ``end``.

    ``counts(position_mm)`` gives the counts; ``end_after`` ends the scan early (``end`` after
    that many positions); ``include_origin`` also reports the origin (0 mm) first, as a
    scanner that counts before its first step would; ``skip`` leaves positions (mm) out.
    """

    def __init__(
        self,
        counts: Callable[[float], int],
        *,
        end_after: int | None = None,
        include_origin: bool = False,
        skip: frozenset[float] = frozenset(),
        line_delay_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.counts = counts
        self.end_after = end_after
        self.include_origin = include_origin
        self.skip = skip
        self.line_delay_s = line_delay_s
        self.scans = 0

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        *lines, rest = buffer.split(b"\n")
        return [line + b"\n" for line in lines if line.strip()], rest

    async def answer(self, request: bytes) -> bytes | None:
        fields = request.decode("ascii", "replace").strip().split(",")
        if len(fields) != 4 or not fields[2].isdigit() or not fields[3].isdigit():
            return b"Error: bad start line\n"
        range_mm = int(fields[2])
        self.scans += 1
        steps = range(0 if self.include_origin else 1, range_mm * 2 + 1)
        sent = 0
        for k in steps:
            if self.end_after is not None and sent >= self.end_after:
                break
            position = k * 0.5
            sent += 1
            if position in self.skip:
                continue
            if self.line_delay_s:
                await asyncio.sleep(self.line_delay_s)
            await self.push(f"{k * 5}; {self.counts(position)}\n".encode("ascii"))
        return b"end\n"
