"""Times and durations typed by people (command line options, API query parameters).

One parser for every place that takes a time, so that the same text means the same instant
everywhere and a bad one gets the same kind of error:

- :func:`parse_duration`: ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"500ms"`` or plain seconds;
- :func:`parse_instant`: an ISO 8601 time with a UTC offset (``Z`` accepted), or, where the
  caller allows it, a duration meaning "that long ago".

Instants are UTC nanoseconds. Journal times lie between :data:`MIN_NS` and :data:`MAX_NS`
(1970 to 2200); an instant outside that span is refused rather than turned into an integer that
does not fit SQLite's 64 bits or a date no record can have.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta

from daq.errors import DaqError

#: 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z: the span any journal time lies in.
MIN_NS = 0
MAX_NS = 7_258_118_400 * 1_000_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: A duration longer than the journal's whole span (230 years) cannot name a journal time.
MAX_DURATION_S = MAX_NS / 1e9


class TimeParseError(DaqError, ValueError):
    """A time or duration that cannot be read; the message names the option and what was expected.

    It is a :class:`ValueError` too, so code that validated with ``except ValueError`` keeps working.
    """


def parse_duration(text: str, option: str = "duration") -> float:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"500ms"`` or plain seconds, as finite seconds.

    Raises :class:`TimeParseError` naming ``option`` for anything else, and for a duration longer
    than :data:`MAX_DURATION_S`.
    """
    match = _DURATION.match(text)
    if match is None:
        raise TimeParseError(f"{option}: expected a duration such as 30s, 5m, 2h or 1d (got {text!r})")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise TimeParseError(f"{option}: {text!r} is longer than {MAX_DURATION_S / 86400 / 365.25:.0f} years")
    return seconds


def parse_datetime(text: str, option: str) -> datetime:
    """An ISO 8601 time with a UTC offset (``Z`` accepted) as an aware datetime (any year 1-9999)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimeParseError(
            f"{option}: expected an ISO 8601 time with a UTC offset, e.g. 2026-03-01T09:30:00+01:00 "
            f"(got {text!r})"
        ) from None
    if when.tzinfo is None:
        raise TimeParseError(
            f"{option}: {text!r} has no UTC offset; add one (e.g. Z or +01:00): local time is ambiguous"
        )
    return when


def datetime_ns(when: datetime) -> int:
    """UTC nanoseconds of an aware datetime, exact to the microsecond (no float rounding)."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def parse_instant(text: str, option: str, *, now_ns: int | None = None, ago: bool = True) -> int:
    """UTC nanoseconds from ISO 8601 with an offset or, when ``ago``, a duration before ``now_ns``.

    The result lies in [:data:`MIN_NS`, :data:`MAX_NS`]; anything else raises
    :class:`TimeParseError` naming ``option``.
    """
    if ago and _DURATION.match(text):
        seconds = parse_duration(text, option)
        now = time.time_ns() if now_ns is None else now_ns
        ns = now - round(seconds * 1e9)
    else:
        ns = datetime_ns(parse_datetime(text, option))
    if not MIN_NS <= ns <= MAX_NS:
        raise TimeParseError(f"{option}: {text!r} lies outside 1970-01-01 to 2200-01-01 (UTC)")
    return ns
