"""Modbus exceptions and pymodbus's errors as the project's: the one place this driver maps them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from daq.errors import ConnectError, ReadTimeout

#: Modbus exception codes (Modbus Application Protocol V1.1b3, section 7).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
#: Codes after which the rest of that unit's reads in this poll are not tried.
UNIT_DOWN_CODES = frozenset({4, 10, 11})


class UnitFailed(Exception):
    """One read went wrong: ``reason`` is a :class:`Reason`; ``code`` a Modbus exception code."""

    def __init__(self, reason: str, message: str, code: int | None = None, raw: bytes | None = None):
        self.reason = reason
        self.message = message
        self.code = code
        self.raw = raw
        super().__init__(message)


@contextlib.contextmanager
def map_exceptions(what: str, connected: Callable[[], bool]) -> Iterator[None]:
    """pymodbus's errors raised inside as the project's: a lost connection is
    :class:`ConnectError`; no valid reply (pymodbus's ``ModbusIOException``) is
    :class:`ReadTimeout` while the link is still up (``connected()``), else ConnectError.
    ``what`` names the request in the message."""
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    try:
        yield
    except ConnectionException as exc:
        raise ConnectError(f"{what}: {exc}") from exc
    except ModbusIOException as exc:
        if not connected():
            raise ConnectError(f"{what}: connection closed: {exc}") from exc
        raise ReadTimeout(f"{what}: no valid reply") from exc
