"""Talking to a running daemon's API from the command line (``daq tail``, ``daq status``).

Plain ``urllib``: blocking calls suit a command line, and nothing here needs aiohttp.
The API address is ``--api``, else ``$DAQ_API``, else ``http://127.0.0.1:8470``.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from daq.errors import DaqError

DEFAULT_API = "http://127.0.0.1:8470"


class ApiUnavailable(DaqError):
    """No daemon answers at the API address (or the connection dropped)."""


def default_api() -> str:
    return os.environ.get("DAQ_API") or DEFAULT_API


def check_api_url(base: str) -> str:
    """``base`` if it is an ``http(s)://HOST[:PORT]`` address; else :class:`DaqError` saying so."""
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise DaqError(f"API address {base!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DaqError(f"API address {base!r}: expected a URL such as {DEFAULT_API} (--api or $DAQ_API)")
    return base


def _url(base: str, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
    check_api_url(base)
    query = urllib.parse.urlencode(list(params))
    return base.rstrip("/") + path + (f"?{query}" if query else "")


def get_json(base: str, path: str, params: Sequence[tuple[str, str]] = (), timeout: float = 5.0) -> Any:
    """GET ``path`` and decode its JSON; raises :class:`ApiUnavailable` or :class:`DaqError`."""
    url = _url(base, path, params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only, from --api)
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DaqError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiUnavailable(f"no daemon answering at {base} ({reason})") from None


def stream(
    base: str, params: Sequence[tuple[str, str]], timeout: float = 20.0, *, path: str = "/api/stream"
) -> Iterator[dict[str, Any]]:
    """Objects of the NDJSON live stream (``path``: the readings', or ``/api/alarms/stream``)
    until the connection ends.

    ``timeout`` bounds the silence between lines (the server sends heartbeats), so a daemon
    that vanished without closing the connection is noticed. Raises :class:`ApiUnavailable`
    when the connection cannot be made or breaks; returns when the server ends the stream.
    """
    url = _url(base, path, [*params, ("format", "ndjson")])
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DaqError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ApiUnavailable(f"no daemon answering at {base} ({getattr(exc, 'reason', exc)})") from None
    try:
        with resp:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiUnavailable(f"connection to {base} lost ({exc})") from None
                if not line:
                    return
                yield json.loads(line)
    except ValueError as exc:
        raise ApiUnavailable(f"garbled stream from {base}: {exc}") from None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_status(st: dict[str, Any]) -> str:
    """The live status as one table of instruments and one of sinks, plus alarms."""
    d = st["daemon"]
    j = st.get("journal") or {}
    lines = [
        f"daemon {d['site']}/{d['cell']} pid {d['pid']}, up {_age(d['uptime_s'])}, config {d['config']}",
        f"journal {j.get('path', '-')}: {j.get('size_bytes', 0) / 1e6:.1f} MB, "
        f"{j.get('readings_committed', 0)} readings committed since start, pending {j.get('pending', 0)}"
        + (f", {j['rejected']} records refused" if j.get("rejected") else "")
        + (f", ERROR {j['error']}" if j.get("error") else ""),
    ]
    run = st.get("run")
    lines.append(f"run {run.get('run_id')} (batch {run.get('batch')})" if run else "no active run")
    lines.append("")
    lines.append(
        f"{'instrument':<18} {'kind':<18} {'state':<11} {'last value':>10} {'reconnects':>10} "
        f"{'parse err':>9}  last error"
    )
    for name, inst in sorted(st["instruments"].items()):
        age = _age(inst.get("last_value_age_s"))
        lines.append(
            f"{name:<18} {inst.get('kind', ''):<18} {inst['state']:<11} {age:>10} "
            f"{inst['reconnects']:>10} {inst['parse_errors']:>9}  {inst.get('last_error') or ''}".rstrip()
        )
    sinks = st.get("sinks") or {}
    if sinks:
        lines.append("")
        lines.append(f"{'sink':<18} {'backlog':>10} {'quarantined':>11}  alarm / last error")
        for name, s in sorted(sinks.items()):
            backlog = "-" if s.get("backlog") is None else str(s["backlog"])
            quarantined = "-" if s.get("quarantined") is None else str(s["quarantined"])
            note = f"ALARM {s['alarm']}" if s.get("alarm") else s.get("last_error") or ""
            lines.append(f"{name:<18} {backlog:>10} {quarantined:>11}  {note}".rstrip())
    failed = {c: t for c, t in (st.get("tasks") or {}).items() if t.get("failures")}
    if failed:
        lines.append("")
        lines.append(f"{'task':<24} {'state':<11} {'failures':>8} {'restarts':>8}  last error")
        for name, t in sorted(failed.items()):
            lines.append(
                f"{name:<24} {t['state']:<11} {t['failures']:>8} {t['restarts']:>8}  {t['last_error'] or ''}"
            )
    alarms = st.get("alarms") or []
    if alarms:
        lines.append("")
        lines.extend(f"{a['severity'].upper():<8} {a['subject']}: {a['message']}" for a in alarms)
    return "\n".join(lines)
