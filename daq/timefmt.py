"""How times are shown: one convention for the whole project.

- **People** (``daq demo``, ``tail``, ``runs``, ``audit``, ``tlc``, ``status``, ``sinks``, the run
  report, the live page) read times in the **site's time zone, with its UTC offset**: ISO 8601
  such as ``2026-03-01T09:30:00.123+01:00``. The site's zone is ``daemon.timezone`` (an IANA
  name); empty means the system's zone (which honours ``TZ``).
- **Machines** (JSON output, exports, line protocol, the journal) get **UTC**: nanoseconds since
  the epoch, or ISO 8601 ending in ``+00:00`` (:func:`daq.model.iso`).

Commands that read a journal take the zone from the newest configuration recorded in it, so
``daq audit`` on the line PC and on a QA laptop with a copy of the journal show the same times.
"""

from __future__ import annotations

import sqlite3
import tomllib
import zoneinfo
from datetime import UTC, datetime, tzinfo

#: ``None`` stands for the system's zone (resolved per instant, so daylight saving is right).
Zone = tzinfo | None

#: The zone :func:`human` and :func:`clock_time` use when none is given: set once per command by
#: the command line (from the journal or the config it reads), the system's until then.
_site: Zone = None


def set_site_zone(tz: Zone) -> None:
    """Make ``tz`` the zone people's times are shown in for the rest of this command."""
    global _site
    _site = tz


def site_zone() -> Zone:
    """The zone set by :func:`set_site_zone` (``None``: the system's)."""
    return _site


def zone(name: str | None) -> Zone:
    """The zone named ``name`` (IANA), or ``None`` (the system's) for an empty or unknown name."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def journal_zone(conn: sqlite3.Connection) -> Zone:
    """The site's zone as the newest configuration in the journal names it (``daemon.timezone``).

    A journal without a recorded configuration, or one whose text does not parse, gives the
    system's zone: showing times is never a reason to fail.
    """
    try:
        row = conn.execute("SELECT text FROM configs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    try:
        daemon = tomllib.loads(row[0]).get("daemon", {})
    except (tomllib.TOMLDecodeError, TypeError, AttributeError):
        return None
    name = daemon.get("timezone") if isinstance(daemon, dict) else None
    return zone(name if isinstance(name, str) else None)


def local(ns: int, tz: Zone = None) -> datetime:
    """The instant ``ns`` (UTC nanoseconds) as an aware datetime in ``tz``, else in the site's
    zone (:func:`set_site_zone`), else in the system's."""
    when = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    tz = tz if tz is not None else _site
    return when.astimezone(tz) if tz is not None else when.astimezone()


def human(ns: int | None, tz: Zone = None, *, timespec: str = "milliseconds") -> str:
    """ISO 8601 in the site's zone with its offset, e.g. ``2026-03-01T09:30:00.123+01:00``;
    ``-`` for no time."""
    if ns is None:
        return "-"
    return local(ns, tz).isoformat(timespec=timespec)


def clock_time(ns: int, tz: Zone = None) -> str:
    """``HH:MM:SS.mmm`` in the site's zone, for columns whose header names the zone once."""
    when = local(ns, tz)
    return when.strftime("%H:%M:%S") + f".{when.microsecond // 1000:03d}"


def zone_label(tz: Zone = None, ns: int | None = None) -> str:
    """The zone as people read it, e.g. ``Europe/Vienna (UTC+01:00)`` or ``system zone (UTC+01:00)``."""
    when = local(ns if ns is not None else int(datetime.now(UTC).timestamp() * 1e9), tz)
    offset = when.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if offset else "+00:00"
    tz = tz if tz is not None else _site
    name = str(tz) if tz is not None else "system zone"
    return f"{name} (UTC{offset})"
