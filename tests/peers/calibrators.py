"""Dose-calibrator peers, from docs/instruments.md ("Dose calibrators") alone."""

from __future__ import annotations

from tests.peers.base import Peer

STX, ETX = 0x02, 0x03


def crc35r_checksum(length: int, body: bytes) -> int:
    """Add STX, the length byte and the body bytes; keep seven bits; add 0x21."""
    return ((STX + length + sum(body)) & 0x7F) + 0x21


def crc35r_wrap(body: bytes, *, length: int | None = None, checksum: int | None = None) -> bytes:
    """A CRC-35R frame around ``body``; ``length``/``checksum`` force wrong ones."""
    n = 0x41 + len(body) if length is None else length
    s = crc35r_checksum(n, body) if checksum is None else checksum
    return bytes([STX, n]) + body + bytes([s, ETX])


class Crc35rPeer(Peer):
    """Chambers ``n -> (setting, figure, unit code)``; ``replies[n]`` replaces the reply to
    ``R<n>`` with any bytes (a fault). Requests with a wrong length or checksum get no reply."""

    def __init__(self, chambers: dict[int, tuple[str, str, str]]) -> None:
        super().__init__()
        self.chambers = dict(chambers)
        self.replies: dict[int, bytes] = {}

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        out = []
        while bytes([ETX]) in buffer:
            frame, _, buffer = buffer.partition(bytes([ETX]))
            start = frame.rfind(bytes([STX]))
            if start >= 0:
                out.append(frame[start:] + bytes([ETX]))
        return out, buffer

    def reply_for(self, n: int) -> bytes:
        setting, figure, code = self.chambers[n]
        return crc35r_wrap(f"DR{n},{setting:<6},{figure:>6}{code}".encode("ascii"))

    async def answer(self, request: bytes) -> bytes | None:
        if len(request) < 4:
            return None
        length, body, checksum = request[1], request[2:-2], request[-2]
        if length != 0x41 + len(body) or checksum != crc35r_checksum(length, body):
            return None
        if len(body) == 2 and body[:1] == b"R" and body[1:].isdigit():
            n = int(body[1:])
            if n in self.replies:
                return self.replies[n]
            if n in self.chambers:
                return self.reply_for(n)
        return None


class Atomlab500Peer(Peer):
    """Answers ``1`` CR or ``^C`` with ``<isotope> <figure> <unit>`` CR LF."""

    def __init__(self, isotope: str, figure: str, unit: str) -> None:
        super().__init__()
        self.isotope, self.figure, self.unit = isotope, figure, unit
        #: Replies sent instead of the activity line, one per query, first to last.
        self.script: list[bytes] = []

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        out = []
        while buffer:
            if buffer[:1] == b"\x03":
                out.append(buffer[:1])
                buffer = buffer[1:]
            elif b"\r" in buffer:
                line, _, buffer = buffer.partition(b"\r")
                out.append(line.lstrip(b"\n") + b"\r")
            else:
                break
        return out, buffer

    async def answer(self, request: bytes) -> bytes | None:
        text = request.strip(b"\r\n").decode("ascii", "replace")
        if text in ("1", "\x03"):
            if self.script:
                return self.script.pop(0)
            return f"{self.isotope} {self.figure} {self.unit}\r\n".encode("ascii")
        if text.upper().startswith("ISO") and len(text) > 4:
            self.isotope = text[4:].strip()
            return b"OK\r\n"
        return b"?\r\n"


class Vdc404Peer(Peer):
    """Talks by itself: a test pushes ``<isotope>: <figure> <unit>`` lines (:meth:`line`)."""

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        return ([buffer] if buffer else []), b""

    async def answer(self, request: bytes) -> bytes | None:
        return None

    async def line(self, isotope: str, figure: str, unit: str) -> None:
        await self.push(f"{isotope}: {figure} {unit}\r\n".encode("ascii"))


class Vik202Peer(Peer):
    """``!R`` answers the activity in Bq; ``!GF`` the factor; commands answer ``>OK``.

    ``replies`` overrides the reply text of a command (CR is appended; ``None``: no reply).
    """

    def __init__(self, activity_bq: str = "740000000", factor: str = "762") -> None:
        super().__init__()
        self.activity_bq = activity_bq
        self.factor = factor
        self.replies: dict[str, str | None] = {}

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        *lines, rest = buffer.split(b"\r")
        return [line + b"\r" for line in lines if line.strip(b"\n")], rest

    def text_for(self, command: str) -> str | None:
        if command in self.replies:
            return self.replies[command]
        if command == "!R":
            return self.activity_bq
        if command == "!GF":
            return self.factor
        if command == "!GV":
            return "VIK-202 peer 1.0"
        if command == "!GQ":
            return "1.25E-11"
        if command == "!V":
            return "297"
        if command.startswith("!F") and len(command) > 2:
            self.factor = command[2:]
            return ">OK"
        if command in ("!BON", "!BOFF", "!Z"):
            return ">OK"
        return "?"

    async def answer(self, request: bytes) -> bytes | None:
        text = self.text_for(request.strip(b"\r\n").decode("ascii", "replace"))
        return None if text is None else text.encode("ascii") + b"\r"
