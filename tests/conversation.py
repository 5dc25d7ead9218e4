"""Byte-exact expected conversations with a driver over an in-memory null modem.

An :class:`ExpectedConversation` is a list of ``(sent, reply)`` exchanges written from the
protocol notes (docs/instruments.md): ``sent`` is what the driver must write, byte for byte
(``None``: the instrument speaks unasked), ``reply`` what the instrument answers (``None``:
silence). The driver gets one end of :func:`daq.transport.null_modem` through its link
factory; the instrument end plays the exchanges in order. Leaving the ``async with`` block
fails the test on any difference: bytes other than expected, an exchange never used, or bytes
the driver wrote beyond the last one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from daq.errors import DriverError
from daq.transport import Link, null_modem

#: How long the instrument end waits for the driver's next request.
REQUEST_WAIT_S = 2.0


class ExpectedConversation:
    def __init__(self, exchanges: Sequence[tuple[bytes | None, bytes | None]]):
        self.exchanges = list(exchanges)
        self.used = 0
        #: The url and line settings the driver opened its link with.
        self.url: str | None = None
        self.line_settings: dict[str, Any] = {}
        self.errors: list[str] = []
        self._instrument: Link | None = None
        self._task: asyncio.Task[None] | None = None

    async def factory(self, url: str, **line_settings: Any) -> Link:
        """The driver's link factory: one end of a null modem, the instrument on the other."""
        if self._instrument is not None:
            self.errors.append(f"the link to {url} was opened a second time")
        self.url, self.line_settings = url, line_settings
        driver_end, self._instrument = null_modem(f"memory://{url}")
        self._task = asyncio.create_task(self._play(self._instrument), name="test:conversation")
        return driver_end

    async def _play(self, instrument: Link) -> None:
        for i, (sent, reply) in enumerate(self.exchanges):
            if sent is not None:
                try:
                    got = await instrument.read_exactly(len(sent), REQUEST_WAIT_S)
                except DriverError as exc:
                    partial = instrument.discard_input()
                    self.errors.append(f"exchange {i}: expected {sent!r}, got {partial!r} ({exc})")
                    return
                if got != sent:
                    self.errors.append(f"exchange {i}: expected {sent!r}, got {got!r}")
                    return
            if reply is not None:
                await instrument.write(reply)
            self.used = i + 1

    async def __aenter__(self) -> ExpectedConversation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, instrument = self._task, self._instrument
        if task is not None:
            # Let the instrument end take what the driver wrote last.
            for _ in range(5):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if instrument is not None:
            extra = instrument.discard_input()
            if extra:
                self.errors.append(f"the driver wrote {extra!r} after the last expected exchange")
            await instrument.close()
        if self._instrument is None and self.exchanges:
            self.errors.append("the driver never opened its link")
        if self.used < len(self.exchanges):
            self.errors.append(f"exchanges never used: {self.exchanges[self.used :]!r}")
        if exc[0] is None:
            assert not self.errors, "\n".join(self.errors)
