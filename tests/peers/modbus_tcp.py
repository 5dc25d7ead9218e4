"""An independent Modbus TCP server for the driver tests: pyModbusTCP, not pymodbus.

The project's simulators and the driver both use pymodbus; a misreading shared by the two
(framing, word order, exception handling) would pass every simulator test. This server
is a different implementation (its own framing, threads, data bank), and the values it
serves are encoded with pyModbusTCP's own helpers, never with the driver's codec.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pyModbusTCP.constants import EXP_DATA_ADDRESS
from pyModbusTCP.server import DataBank, DataHandler, ModbusServer

TABLES = ("coil", "discrete", "holding", "input")


class _Handler(DataHandler):  # type: ignore[misc]
    """Answers exception 2 for any read that covers an unmapped address, like a PLC whose
    tag table has holes; can be made slow; logs each request."""

    def __init__(self, peer: PeerModbusServer):
        super().__init__(data_bank=peer.bank)
        self.peer = peer

    def _check(self, table: str, address: int, count: int) -> Any:
        peer = self.peer
        with peer.lock:
            peer.requests.append((table, address, count))
            delay = peer.delay_s
            holes = peer.unmapped[table]
            fail_code = peer.fail_code
        if delay:
            time.sleep(delay)
        if fail_code:
            return DataHandler.Return(exp_code=fail_code)
        if any(address <= a < address + count for a in holes):
            return DataHandler.Return(exp_code=EXP_DATA_ADDRESS)
        return None

    def read_coils(self, address: int, count: int, srv_info: Any) -> Any:
        return self._check("coil", address, count) or super().read_coils(address, count, srv_info)

    def read_d_inputs(self, address: int, count: int, srv_info: Any) -> Any:
        return self._check("discrete", address, count) or super().read_d_inputs(address, count, srv_info)

    def read_h_regs(self, address: int, count: int, srv_info: Any) -> Any:
        return self._check("holding", address, count) or super().read_h_regs(address, count, srv_info)

    def read_i_regs(self, address: int, count: int, srv_info: Any) -> Any:
        return self._check("input", address, count) or super().read_i_regs(address, count, srv_info)


class PeerModbusServer:
    """pyModbusTCP's server on 127.0.0.1 and a free port, in its own threads."""

    def __init__(self) -> None:
        self.bank = DataBank()
        self.lock = threading.Lock()
        #: (table, address, count) of every read received, in order.
        self.requests: list[tuple[str, int, int]] = []
        #: Addresses per table that answer exception 2 (illegal data address).
        self.unmapped: dict[str, set[int]] = {t: set() for t in TABLES}
        #: A Modbus exception code every read answers with (0: none), e.g. 4, device failure.
        self.fail_code = 0
        #: Seconds each read waits before it is answered (a slow PLC).
        self.delay_s = 0.0
        self._server = ModbusServer("127.0.0.1", 0, no_block=True, data_hdl=_Handler(self))

    def start(self) -> str:
        self._server.start()
        port = self._server._service.server_address[1]  # port 0: the one the kernel chose
        return f"tcp://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.stop()

    def reads(self, table: str) -> list[tuple[int, int]]:
        with self.lock:
            return [(a, c) for t, a, c in self.requests if t == table]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
