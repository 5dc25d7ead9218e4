"""How the Modbus driver reaches its server: a pymodbus client on a socket, a serial line or
pymodbus's in-memory null modem.

The driver opens its link through a :data:`ModbusLinkFactory` (:func:`open_client` unless a
test injects another), so a test can join it to a real pymodbus server in memory
(:func:`null_modem`): the client and the server run their own code, only the socket is
replaced. pymodbus's own reconnect and retries are switched off in every client: the
supervisor owns both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from drivers.modbus.config import ModbusConfig

#: Makes the pymodbus client for ``config``: called as ``factory(config, name, timeout_s)``,
#: ``timeout_s`` being the per-request timeout.
ModbusLinkFactory = Callable[[ModbusConfig, str, float], Any]


def open_client(config: ModbusConfig, name: str, timeout_s: float) -> Any:
    """A pymodbus client for ``config.port``: Modbus TCP for ``tcp://HOST:PORT``, RTU otherwise."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    # reconnect_delay=0 and retries=0: the supervisor owns reconnects and retries.
    if config.is_tcp:
        parts = urlsplit(config.port)
        return AsyncModbusTcpClient(
            parts.hostname or "",
            port=parts.port or 502,
            name=name,
            reconnect_delay=0,
            timeout=timeout_s,
            retries=0,
        )
    s = config.serial
    return AsyncModbusSerialClient(
        config.port,
        framer=FramerType.RTU,
        baudrate=s.baudrate or 19200,
        bytesize=s.bytesize or 8,
        parity=s.parity or "E",
        stopbits=s.stopbits or 1,
        name=name,
        reconnect_delay=0,
        timeout=timeout_s,
        retries=0,
    )


def null_modem(port: int) -> ModbusLinkFactory:
    """A factory of Modbus TCP clients on pymodbus's in-memory null modem ``port``, where a
    pymodbus server listens at ``(pymodbus.transport.NULLMODEM_HOST, port)``; for tests."""

    def factory(config: ModbusConfig, name: str, timeout_s: float) -> Any:
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.transport import NULLMODEM_HOST

        return AsyncModbusTcpClient(
            NULLMODEM_HOST, port=port, name=name, reconnect_delay=0, timeout=timeout_s, retries=0
        )

    return factory
