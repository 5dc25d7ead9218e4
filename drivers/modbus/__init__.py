"""Modbus TCP and RTU, driven by a register map declared in config.

Synthesizer modules and hot-cell PLCs expose process values in Modbus tables; each site has
its own map, so this driver is generic: the ``channels`` of an instrument say where each value
lives (unit id, table, address), how to decode it (type, word and byte order) and how to turn
it into an engineering value (scale, offset, unit). See :mod:`drivers.modbus.codec`.

- ``port = "tcp://HOST:PORT"`` is Modbus TCP; any other port (a device path, a PTY,
  pyserial's ``socket://`` or ``rfc2217://``) is Modbus RTU on a serial line.
- At connect the map is compiled into a plan: per unit id and table, contiguous addresses
  are coalesced into the fewest reads within the protocol limits (125 registers or 2000
  bits). Each value is stamped with the time its own response arrived.
- A Modbus exception or a timeout on one unit id marks only the channels it covers BAD
  (reason ``device_error`` with ``exception_code``, or ``timeout``); the other unit ids'
  readings of the same poll stay GOOD. Only when no unit answers is the poll a timeout.
- Exception 2 (illegal data address) to a coalesced read does not blank its block: the read
  is split in halves, down to single values, in the same poll, until the refused address is
  isolated. The plan is then made again around it (the refused value alone, the rest in
  blocks that never cover it), so the search is not repeated every poll. The refused
  channel is BAD with the exception, logged once and listed in
  :meth:`ModbusDriver.problems`; the rest of the block stays GOOD.
- Reads left unsent because the poll's deadline (the supervisor's ``timeout_s``) was spent
  (a slow server) are counted per channel: the first poll that starves a channel is logged,
  and the counts are in :meth:`ModbusDriver.problems` (``starved``) until that channel is
  read again.
- Only read function codes (1 to 4) are sent, unless ``allow_writes = true``: then
  ``write("set", "CHANNEL=VALUE")`` writes a ``writable`` holding register (FC 6 or 16)
  or coil (FC 5), and the daemon audits it.
- RTU: one lock per bus, and at least ``frame_gap_s`` of silence between frames (3.5
  character times, 1.75 ms above 19200 baud: Modbus over Serial Line V1.02, 2.5.1.1).

pymodbus (pinned) does the framing; its client is created without its own reconnect or
retries (the supervisor owns both), by a link factory, so a test can join the driver to a real
pymodbus server over pymodbus's in-memory null modem.

The package: :mod:`.config` (the instrument table and register map), :mod:`.codec` (decoding
and request planning, free of I/O), :mod:`.plan` (the compiled reads of one poll, planned
again around refused addresses),
:mod:`.errors` (exception codes; pymodbus's errors mapped in one place), :mod:`.link` (the
client on a socket, a serial line or the null modem), :mod:`.readings` (the readings of an
answered or failed read), :mod:`.health` (starved channels, refused addresses, failing units)
and :mod:`.driver`.
"""

from __future__ import annotations

from drivers.modbus.config import ModbusChannel, ModbusConfig, load_map_file
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import compile_plan

__all__ = ["ModbusChannel", "ModbusConfig", "ModbusDriver", "compile_plan", "load_map_file"]
