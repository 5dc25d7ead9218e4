"""Performance qualification helper: the site's own config, read-only, against its real
instruments for a while, in a scratch data directory; per instrument what was read (rows,
rate, qualities, gaps). The site judges the figures against its own PQ protocol: this scenario
records them and fails only when an instrument gave no GOOD reading at all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from daq.cli.validation.results import Scenario
from daq.configfile.load import load_config
from daq.journal.journal import JOURNAL_FILE, connect


def run_pq(out: Path, scratch: Path, config_path: Path, duration_s: float) -> Scenario:
    from daq.daemon import Daemon

    sc = Scenario("PQ-SITE", f"The site's config read for {duration_s:g} s (performance qualification aid)")
    cfg = load_config(config_path).with_data_dir(scratch / "pq")
    # Writes to instruments are never made by the PQ: it is a reading exercise.
    writes = [i.name for i in cfg.instruments if getattr(i, "allow_writes", False)]
    sc.check("no instrument has writes enabled", "none", writes or "none", not writes)
    if writes:
        return sc.finish()
    start = time.time_ns()
    asyncio.run(Daemon(cfg).run(duration_s=duration_s))
    elapsed = (time.time_ns() - start) / 1e9
    conn = connect(scratch / "pq" / JOURNAL_FILE, read_only=True)
    try:
        rows = conn.execute(
            "SELECT instrument, quality, reason, count(*) FROM readings GROUP BY 1, 2, 3"
        ).fetchall()
    finally:
        conn.close()
    per: dict[str, dict[str, object]] = {}
    for inst in cfg.instruments:
        mine = [r for r in rows if r[0] == inst.name]
        good = sum(r[3] for r in mine if r[1] == 0)
        total = sum(r[3] for r in mine)
        gaps = {r[2]: r[3] for r in mine if r[1] == 2}
        per[inst.name] = {
            "rows": total,
            "good": good,
            "rate_per_s": round(total / elapsed, 3),
            "bad_by_reason": gaps,
        }
        sc.check(f"{inst.name}: read", ">= 1 GOOD reading", per[inst.name], good >= 1)
    sc.evidence_json(out, "per-instrument.json", {"duration_s": elapsed, "instruments": per})
    return sc.finish()
