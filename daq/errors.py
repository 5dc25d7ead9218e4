"""The project's exception tree.

::

    DaqError
     +-- ConfigError            bad config: names the file, the key path and what was expected
     +-- JournalError           the journal cannot be opened, written or verified
     |    +-- JournalTampered   the hash chain or the append-only guarantees are broken
     +-- DriverError            anything a driver raises
          +-- ConnectError      the instrument could not be reached or the link dropped
          +-- ReadTimeout       no (complete) answer within the timeout
          +-- ProtocolError     a frame that does not parse; carries the raw bytes
          +-- DeviceError       the instrument answered with an error of its own
          +-- WriteRefused      a state-changing command while writes are disabled

Raise or log, never both.
"""

from __future__ import annotations


class DaqError(Exception):
    """Base of every error hotcell-daq raises on purpose."""


class ConfigError(DaqError):
    """A configuration problem, located by file and key path."""

    def __init__(self, message: str, *, file: str | None = None, key_path: str | None = None):
        self.file = file
        self.key_path = key_path
        self.detail = message
        where = ": ".join(p for p in (file, key_path) if p)
        super().__init__(f"{where}: {message}" if where else message)


class JournalError(DaqError):
    """The journal could not be opened, written or read."""


class JournalTampered(JournalError):
    """Verification found a record whose hash does not chain, or a missing guard."""

    def __init__(self, message: str, *, table: str | None = None, row_id: int | None = None):
        self.table = table
        self.row_id = row_id
        super().__init__(message)


class DriverError(DaqError):
    """Base of the errors a driver raises."""


class ConnectError(DriverError):
    """The link to the instrument could not be opened, or it dropped."""


class ReadTimeout(DriverError):
    """No complete answer arrived within the configured timeout."""


class ProtocolError(DriverError):
    """A frame that could not be parsed.

    ``raw`` holds the offending bytes so they can be journaled; ``channel`` names the
    channel the frame was meant for, when the driver knows it.
    """

    def __init__(self, message: str, *, raw: bytes = b"", channel: str | None = None):
        self.raw = raw
        self.channel = channel
        self.reason = message
        super().__init__(message)


class DeviceError(DriverError):
    """The instrument answered, but with an error of its own (for example a Modbus exception)."""

    def __init__(self, message: str, *, code: str | None = None, channels: list[str] | None = None):
        self.code = code
        self.channels = channels
        super().__init__(message)


class WriteRefused(DriverError):
    """A command that changes the instrument's state was refused because writes are disabled."""
