"""The suite's own ports: a port handed out for a server is nobody else's, and a port that must
stay unanswered refuses every connection while the test holds it."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import PORT_SLICES, free_port, port_range, refused_port


def _ephemeral() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
    return range(low, high + 1)


def test_each_worker_has_its_own_ports_outside_the_ephemeral_range() -> None:
    ranges = [port_range(w) for w in ["", *(f"gw{i}" for i in range(PORT_SLICES - 1))]]
    ephemeral = _ephemeral()
    seen: set[int] = set()
    for r in ranges:
        assert len(r) >= 500
        assert r.start >= 1024
        assert r.stop <= ephemeral.start  # bind(0) and source ports never land in it
        assert seen.isdisjoint(r)
        seen.update(r)


def test_free_ports_are_this_workers_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert set(ports) <= set(port_range())
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_in_use() -> None:
    first = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))
        held.listen()
        others = {free_port() for _ in range(len(port_range()))}
    assert first not in others


def test_a_refused_port_refuses_and_cannot_be_taken() -> None:
    with refused_port() as port:
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
