"""Which readings a live client wants, and durations such as ``5m`` (shared with ``daq tail``).

Nothing here imports aiohttp, so the command line can use it without paying for the server.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from daq import timeparse
from daq.model import Quality, Reading


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"500ms"`` or plain seconds, as seconds.

    Raises :class:`ValueError` naming what was expected (see :func:`daq.timeparse.parse_duration`).
    """
    return timeparse.parse_duration(text, "duration")


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


@dataclasses.dataclass(frozen=True, slots=True)
class ReadingFilter:
    """Instruments by name, channels by glob (``reactor_*``), qualities by name; empty = all."""

    instruments: frozenset[str] = frozenset()
    channels: tuple[str, ...] = ()
    qualities: frozenset[Quality] = frozenset()

    @classmethod
    def from_params(
        cls,
        instrument: Iterable[str] = (),
        channel: Iterable[str] = (),
        quality: Iterable[str] = (),
    ) -> ReadingFilter:
        """Build from query parameters (each may repeat or hold a comma-separated list).

        Raises :class:`ValueError` for an unknown quality name.
        """
        qualities = set()
        for name in _split(quality):
            try:
                qualities.add(Quality[name.upper()])
            except KeyError:
                raise ValueError(f"unknown quality {name!r}; expected good, uncertain or bad") from None
        return cls(frozenset(_split(instrument)), tuple(_split(channel)), frozenset(qualities))

    @property
    def everything(self) -> bool:
        return not (self.instruments or self.channels or self.qualities)

    def match(self, instrument: str, channel: str, quality: int) -> bool:
        if self.instruments and instrument not in self.instruments:
            return False
        if self.qualities and quality not in self.qualities:
            return False
        return not self.channels or any(fnmatch.fnmatchcase(channel, g) for g in self.channels)

    def match_reading(self, r: Reading) -> bool:
        return self.match(r.instrument, r.channel, r.quality)

    def match_row(self, row: Mapping[str, Any]) -> bool:
        return self.match(row["instrument"], row["channel"], row["quality"])

    def as_params(self) -> list[tuple[str, str]]:
        params = [("instrument", ",".join(sorted(self.instruments)))] if self.instruments else []
        if self.channels:
            params.append(("channel", ",".join(self.channels)))
        if self.qualities:
            params.append(("quality", ",".join(q.name.lower() for q in sorted(self.qualities))))
        return params
