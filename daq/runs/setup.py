"""What a run records about its setup: the config (a snapshot of its text and the audited
diff from the previous one, once per daemon start) and each instrument's identity (what it
said about itself on connect, now or in its last ``connected`` event)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daq.journal.reader import JournalReader

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.config.loaded import LoadedConfig
    from daq.journal.journal import Journal
    from daq.supervisor import Supervisor

#: The longest config diff kept in the audit entry (the whole text is in ``configs``).
MAX_DIFF_CHARS = 50_000


async def record_config(journal: Journal, config: LoadedConfig, clock: Clock) -> None:
    """Snapshot the config text and audit its diff from the previous snapshot."""
    cfg = config
    with JournalReader(cfg.daemon.data_dir) as reader:
        rows = reader.conn.execute(
            "SELECT sha256, path, text FROM configs ORDER BY id DESC LIMIT 1"
        ).fetchall()
    previous = rows[0] if rows else None
    changed = previous is None or previous[0] != cfg.sha256
    diff = ""
    if previous is not None and changed:
        diff = "".join(
            difflib.unified_diff(
                previous[2].splitlines(keepends=True),
                cfg.text.splitlines(keepends=True),
                fromfile=f"{previous[1]} ({previous[0][:12]})",
                tofile=f"{cfg.path} ({cfg.sha256[:12]})",
            )
        )
    if changed:
        journal.record(
            "configs",
            {"ts_ns": clock.time_ns(), "sha256": cfg.sha256, "path": cfg.path, "text": cfg.text},
        )
    journal.audit(
        "config_diff",
        subject=cfg.path,
        detail={
            "sha256": cfg.sha256,
            "previous_sha256": previous[0] if previous else None,
            "changed": changed,
            "diff": diff[:MAX_DIFF_CHARS],
            "diff_truncated": len(diff) > MAX_DIFF_CHARS,
        },
    )
    await journal.flush()


def instruments(config: LoadedConfig, supervisors: Sequence[Supervisor]) -> dict[str, Any]:
    """Each enabled instrument with what it said about itself on connect: now, or (if it is
    not connected at the moment) in its last ``connected`` event, marked as from the past."""
    out: dict[str, Any] = {}
    for inst in config.instruments:
        if not inst.enabled:
            continue
        info = None
        sup = next((s for s in supervisors if s.name == inst.name), None)
        if sup is not None and sup.device_info is not None:
            info = sup.device_info.as_dict()
        out[inst.name] = {"kind": inst.kind, "description": inst.description, "device": info}
        if info is None:
            out[inst.name].update(_last_connected(config, inst.name))
    return out


def _last_connected(config: LoadedConfig, instrument: str) -> dict[str, Any]:
    with JournalReader(config.daemon.data_dir) as reader:
        row = reader.conn.execute(
            "SELECT ts_ns, detail FROM events WHERE instrument = ? AND kind = 'connected' "
            "ORDER BY id DESC LIMIT 1",
            (instrument,),
        ).fetchone()
    if row is None or not row[1]:
        return {"connected": False}
    return {"connected": False, "device": json.loads(row[1]).get("device"), "device_seen_ns": row[0]}
