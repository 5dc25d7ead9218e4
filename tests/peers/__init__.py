"""Independent instrument emulators ("peers") for the serial drivers' conformance tests.

Each peer is written from the protocol facts in ``docs/instruments.md`` alone: none of them
imports ``drivers`` or ``simulators`` (``tests/test_peers.py`` checks it), so a misreading
shared by a driver and the project's simulator cannot pass here too. A peer serves one
connection at a time over a real TCP socket (``socket://127.0.0.1:PORT``) or a PTY, and lets a
test script its replies byte for byte, faults included.
"""

from __future__ import annotations

from tests.peers.base import Peer
from tests.peers.calibrators import Atomlab500Peer, Crc35rPeer, Vdc404Peer, Vik202Peer, crc35r_checksum
from tests.peers.tlc import TlcScannerPeer

__all__ = [
    "Atomlab500Peer",
    "Crc35rPeer",
    "Peer",
    "TlcScannerPeer",
    "Vdc404Peer",
    "Vik202Peer",
    "crc35r_checksum",
]
