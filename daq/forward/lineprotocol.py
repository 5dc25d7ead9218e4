"""InfluxDB line protocol, formatted directly from journal rows.

Escaping follows the line-protocol reference (InfluxDB 2.x, "Line protocol" > "Special
characters"):

* measurement: comma and space are escaped with a backslash;
* tag keys, tag values and field keys: comma, equals sign and space are escaped;
* string field values: double quote and backslash are escaped, inside double quotes;
* a newline cannot be written anywhere (there is no escape for it); tag values cannot be
  empty (the tag is left out instead); a backslash in a name or tag before another
  backslash, a special character or the end is read differently by different servers
  (InfluxDB documents ``\\\\`` as one backslash; others keep both). Such input raises
  :class:`LineProtocolError`, and the forwarder quarantines that reading rather than send
  a line a server could misread. A lone backslash before an ordinary character is kept.

Lines are built with f-strings (about 14 times cheaper than influxdb-client ``Point``
objects); the escaped measurement-and-tags prefix of a series is cached.

Schema (see docs/forwarding.md, "Schema"): measurement = the instrument's kind;
tags ``site``, ``cell``, ``instrument``, ``channel``, ``run_id`` (while a run is active),
``nuclide`` (when the reading carries one) and ``dup`` (only on the rare second, third...
reading of a series with the very same acquisition time); fields ``value`` (float, absent
for a BAD gap), ``quality`` (0 GOOD, 1 UNCERTAIN, 2 BAD, integer), ``seq`` (integer),
``unit`` (string) and ``reason`` (string, when there is one); timestamp = acquisition time in
nanoseconds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from daq.errors import DaqError
from daq.journal.codec import (
    LINE_ACQ_NS,
    LINE_CHANNEL,
    LINE_COLUMNS,
    LINE_INSTRUMENT,
    LINE_SELECT,
    LineRow,
)

#: The journal columns a formatter reads, in this order (defined with the reading codec).
ROW_COLUMNS = LINE_COLUMNS
ROW_SELECT = LINE_SELECT
#: One row of them, typed by the reading codec.
Row = LineRow

_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})
# attrs are canonical JSON (sorted keys, no spaces): a plain nuclide is found without parsing.
_AMBIGUOUS = re.compile(r"\\([\\, =]|$)")
_NUCLIDE = re.compile(r'"nuclide":"([^"\\]*)"')


class LineProtocolError(DaqError):
    """A value that cannot be written in line protocol (a newline, an empty name...)."""


def _no_newline(s: str, what: str) -> None:
    if "\n" in s or "\r" in s:
        raise LineProtocolError(f"{what} {s!r} contains a newline, which line protocol cannot carry")


def _no_ambiguous_backslash(s: str, what: str) -> None:
    # Parsers disagree on a backslash before another backslash or a special character (some
    # read "\\" as one backslash, some as two), and one at the end would escape the separator.
    if "\\" in s and _AMBIGUOUS.search(s):
        raise LineProtocolError(f"{what} {s!r} has a backslash that parsers would read differently")


def measurement(s: str) -> str:
    """Escape a measurement name."""
    if not s:
        raise LineProtocolError("empty measurement name")
    _no_newline(s, "measurement")
    if s.startswith("#"):
        raise LineProtocolError(f"measurement {s!r} starts with '#', which makes the line a comment")
    _no_ambiguous_backslash(s, "measurement")
    return s.translate(_MEASUREMENT)


def key(s: str) -> str:
    """Escape a tag key, tag value or field key."""
    if not s:
        raise LineProtocolError("empty tag key, tag value or field key")
    _no_newline(s, "tag or field")
    _no_ambiguous_backslash(s, "tag or field")
    return s.translate(_KEY)


def string_field(s: str) -> str:
    """A string field value, quoted and escaped."""
    _no_newline(s, "string field")
    return '"' + s.translate(_STRING) + '"'


def float_field(x: float) -> str | None:
    """A float field value (shortest exact repr), or ``None`` for NaN and infinities, which
    InfluxDB cannot store."""
    if not math.isfinite(x):
        return None
    return repr(float(x))


def tag_set(tags: Mapping[str, str | None]) -> str:
    """``,k=v,...`` with keys sorted (as InfluxDB recommends) and empty values left out."""
    return "".join(f",{key(k)}={key(v)}" for k, v in sorted(tags.items()) if v)


def nuclide_of(attrs: str | None) -> str | None:
    """The ``nuclide`` attribute of a journal ``attrs`` column, if any."""
    if not attrs or '"nuclide"' not in attrs:
        return None
    m = _NUCLIDE.search(attrs)
    if m is not None:
        return m.group(1) or None
    value = json.loads(attrs).get("nuclide")
    return str(value) if value not in (None, "") else None


class LineFormatter:
    """Turns journal rows (``ROW_COLUMNS``) into lines, deterministically.

    ``kinds`` maps instrument names to their kind (the measurement); an unknown instrument
    gets ``default_kind``. Two readings of one series with the same acquisition time would
    overwrite each other in InfluxDB; the formatter tags the second one ``dup=1``, the third
    ``dup=2``, and so on; "the same time" is at ``resolution_ns``, the precision the server
    keeps (1 for InfluxDB; 1,000,000 for VictoriaMetrics, which keeps milliseconds), while the
    timestamp sent is always the exact acquisition time in nanoseconds. It compares each
    reading with the previous reading of its series in journal order, so it must see every
    row in order: call :meth:`observe` on rows already forwarded (the forwarder replays a
    window before its cursor) before formatting new ones.
    """

    def __init__(
        self,
        *,
        site: str,
        cell: str,
        kinds: Mapping[str, str],
        default_kind: str = "daq",
        resolution_ns: int = 1,
        kind_of: Callable[[str], str | None] | None = None,
    ):
        self.site = site
        self.resolution_ns = resolution_ns
        self.cell = cell
        self.kinds = dict(kinds)
        self.default_kind = default_kind
        #: Asked once for the kind of an instrument ``kinds`` does not name (one no longer
        #: configured); ``None`` from it means ``default_kind``.
        self.kind_of = kind_of
        #: Per series (instrument, channel): [time at resolution, dup rank, run_id, nuclide,
        #: prefix of a dup-0 line with that run_id and nuclide, unit, escaped unit]. One list
        #: updated in place: the hot path makes no tuple and looks up one key per row.
        self._series: dict[tuple[str, str], list[Any]] = {}
        self._prefix: dict[tuple[Any, ...], str] = {}

    def _state(self, instrument: str, channel: str) -> list[Any]:
        st = self._series[(instrument, channel)] = [None, 0, None, None, None, None, None]
        return st

    def observe(self, row: Row) -> int:
        """Account for ``row`` in the collision state; returns its ``dup`` rank (0 normally)."""
        instrument, channel = row[LINE_INSTRUMENT], row[LINE_CHANNEL]
        st = self._series.get((instrument, channel)) or self._state(instrument, channel)
        t = row[LINE_ACQ_NS] // self.resolution_ns
        dup: int = st[1] + 1 if st[0] == t else 0
        st[0], st[1] = t, dup
        return dup

    def observe_all(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.observe(row)

    def _kind(self, instrument: str) -> str:
        kind = self.kinds.get(instrument)
        if kind is None and self.kind_of is not None:
            kind = self.kind_of(instrument)
            self.kinds[instrument] = kind or self.default_kind
        return kind or self.default_kind

    def _series_prefix(
        self, instrument: str, channel: str, run_id: str | None, nuclide: str | None, dup: int
    ) -> str:
        ck = (instrument, channel, run_id, nuclide, dup)
        prefix = self._prefix.get(ck)
        if prefix is None:
            if len(self._prefix) > 100_000:
                self._prefix.clear()
            tags = {
                "site": self.site,
                "cell": self.cell,
                "instrument": instrument,
                "channel": channel,
                "run_id": run_id,
                "nuclide": nuclide,
                "dup": str(dup) if dup else None,
            }
            prefix = f"{measurement(self._kind(instrument))}{tag_set(tags)} "
            self._prefix[ck] = prefix
        return prefix

    def format(self, row: Row) -> str:
        """One line for one journal row; raises :class:`LineProtocolError` for input line
        protocol cannot carry (the collision state still advances, so the rows after it are
        formatted as they would be had it been sent)."""
        lines, refused = self.format_many((row,))
        if refused:
            raise refused[0][1]
        return lines[0]

    def format_many(self, rows: Iterable[Row]) -> tuple[list[str], list[tuple[int, LineProtocolError]]]:
        """The lines of ``rows`` in order, and the ids of the rows line protocol cannot carry
        with the reason (those have no line; the collision state advances for every row)."""
        # The hot path of the forwarder: one pass per batch, with observe() and float_field()
        # inlined, and a series' usual prefix and unit taken from its state.
        lines: list[str] = []
        refused: list[tuple[int, LineProtocolError]] = []
        append = lines.append
        series = self._series
        resolution = self.resolution_ns
        for row in rows:
            rid, instrument, channel, seq, acq_ns, value, unit, quality, reason, attrs, run_id = row
            st = series.get((instrument, channel)) or self._state(instrument, channel)
            t = acq_ns // resolution
            if st[0] == t:
                dup = st[1] = st[1] + 1
            else:
                st[0] = t
                dup = st[1] = 0
            try:
                nuclide = nuclide_of(attrs) if attrs else None
                prefix = st[4]
                if dup or prefix is None or run_id != st[2] or nuclide != st[3]:
                    prefix = self._series_prefix(instrument, channel, run_id, nuclide, dup)
                    if not dup:
                        st[2], st[3], st[4] = run_id, nuclide, prefix
                if unit == st[5]:
                    u = st[6]
                else:
                    u = string_field(unit)
                    st[5], st[6] = unit, u
                # value - value is 0.0 for finite floats and NaN for NaN and the infinities.
                if value is not None and value - value == 0.0:
                    if reason:
                        append(
                            f"{prefix}value={float(value)!r},quality={quality}i,seq={seq}i,unit={u},"
                            f"reason={string_field(reason)} {acq_ns}"
                        )
                    else:
                        append(
                            f"{prefix}value={float(value)!r},quality={quality}i,seq={seq}i,unit={u} {acq_ns}"
                        )
                elif reason:
                    append(
                        f"{prefix}quality={quality}i,seq={seq}i,unit={u},"
                        f"reason={string_field(reason)} {acq_ns}"
                    )
                else:
                    append(f"{prefix}quality={quality}i,seq={seq}i,unit={u} {acq_ns}")
            except LineProtocolError as exc:
                refused.append((rid, exc))
        return lines, refused
