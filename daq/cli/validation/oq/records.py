"""OQ scenarios of the records: the journal verified and tampering detected, clock steps
audited, alarms raised and acknowledged, runs sealed, exported and signed.
"""

from __future__ import annotations

import shutil
import sqlite3

from daq.cli.validation.oq.shared import (
    Acquisition,
    Context,
    daq,
    journal_rows,
)
from daq.cli.validation.results import Scenario
from daq.journal.journal import JOURNAL_FILE
from daq.journal.verify import verify_journal


def verify(ctx: Context) -> Scenario:
    sc = Scenario("OQ-VERIFY", "`daq verify` confirms the journal's hash chains")
    acq = ctx.acquisition()
    report = verify_journal(acq.data_dir)
    sc.check("daq verify on the acquisition journal", "OK", report.problem or f"OK {report.rows}", report.ok)
    sc.evidence_json(ctx.out, "verify.json", report.as_dict())
    return sc.finish()


def tamper(ctx: Context) -> Scenario:
    sc = Scenario("OQ-TAMPER", "A changed record is detected by `daq verify`, naming it")
    acq = ctx.acquisition()
    copy = ctx.scratch / "tampered"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(acq.data_dir, copy)
    conn = sqlite3.connect(copy / JOURNAL_FILE)
    try:
        # Whoever edits a journal behind the daemon's back can drop its append-only triggers.
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        row = conn.execute(
            "SELECT id FROM readings WHERE quality=0 AND value IS NOT NULL ORDER BY id LIMIT 1 OFFSET 5"
        ).fetchone()
        conn.execute("UPDATE readings SET value = value * 1.01 WHERE id=?", (row[0],))
        conn.commit()
    finally:
        conn.close()
    sc.observe("change made to a copy of the journal", f"readings id {row[0]}: value multiplied by 1.01")
    report = verify_journal(copy)
    sc.check(
        "daq verify on the changed copy",
        f"FAILED naming readings {row[0]}",
        f"{report.table} {report.row_id}: {report.problem}",
        not report.ok and report.table == "readings" and report.row_id == row[0],
    )
    sc.evidence_json(ctx.out, "verify.json", report.as_dict())
    return sc.finish()


def clock_audit(ctx: Context) -> Scenario:
    sc = Scenario("OQ-CLOCK-AUDIT", "The clock's sync state is recorded in the audit trail")
    acq = ctx.acquisition()
    rows = journal_rows(acq.data_dir, "SELECT action, detail FROM audit WHERE action LIKE 'clock%'")
    sc.check("clock audit entries", ">= 1", [r[0] for r in rows][:5], len(rows) >= 1)
    return sc.finish()


def alarms(ctx: Context) -> Scenario:
    sc = Scenario("OQ-ALARMS", "An alarm raised, journaled and acknowledged by a named user")
    acq = ctx.acquisition()
    sc.observe(
        "limit set for the test",
        "the demo cell's first limit set to high -50 (always passed), on-delay 0.5 s",
    )
    for action, expected, actual, passed in acq.alarm_steps:
        sc.check(action, expected, actual, passed)
    rows = journal_rows(
        acq.data_dir, "SELECT alarm_id, kind, state, actor, comment FROM alarm_events ORDER BY id"
    )
    kinds = [r[1] for r in rows]
    sc.check("alarm journal: the alarm raised", "a 'raised' event", kinds[:6], "raised" in kinds)
    acks = [r for r in rows if r[3] == "oq-validation"]
    sc.check(
        "alarm journal: the acknowledgement",
        "by oq-validation with its comment",
        acks[:1],
        bool(acks) and acks[0][4] == "acknowledged by the OQ",
    )
    sc.evidence_json(
        ctx.out,
        "alarm-events.json",
        [dict(zip(("alarm_id", "kind", "state", "actor", "comment"), r, strict=True)) for r in rows],
    )
    return sc.finish()


def _sealed_run(acq: Acquisition) -> str | None:
    rows = journal_rows(acq.data_dir, "SELECT run_id FROM run_events WHERE kind='stop' ORDER BY id LIMIT 1")
    return str(rows[0][0]) if rows else None


def run_seal(ctx: Context) -> Scenario:
    sc = Scenario("OQ-RUN-SEAL", "A run started by the process is closed and sealed")
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    sc.check("a sealed run in the journal", "1 run sealed", run_id, run_id is not None)
    code, text = daq("runs", "list", "--data-dir", str(acq.data_dir), "--json")
    sc.check("daq runs list", "exit 0", f"exit {code}", code == 0)
    path = ctx.out / "evidence" / "OQ-RUN-SEAL-runs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    sc.add_evidence(ctx.out, path)
    return sc.finish()


def export(ctx: Context) -> Scenario:
    sc = Scenario("OQ-EXPORT", "An export verified; a changed export refused")
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    if not sc.check("a sealed run to export", "1 run", run_id, run_id is not None):
        return sc.finish()
    assert run_id is not None
    outdir = ctx.scratch / "export"
    code, text = daq("export", run_id, "--data-dir", str(acq.data_dir), "--out", str(outdir))
    sc.check("daq export", "exit 0", f"exit {code}: {text.strip()[-200:]}", code == 0)
    code, text = daq("verify", "--export", str(outdir), "--data-dir", str(acq.data_dir))
    sc.check("daq verify --export", "OK", text.strip()[-200:], code == 0 and "OK" in text)
    changed = ctx.scratch / "export-changed"
    shutil.copytree(outdir, changed)
    victim = sorted(p for p in changed.rglob("*.csv") if p.stat().st_size)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, text = daq("verify", "--export", str(changed))
    sc.check(
        f"daq verify --export after one byte of {victim.name} flipped",
        f"FAILED naming {victim.name}",
        text.strip()[-200:],
        code != 0 and victim.name in text,
    )
    return sc.finish()


def signatures(ctx: Context) -> Scenario:
    sc = Scenario(
        "OQ-SIGNATURES", "An e-signature refused with a wrong password, accepted with the right one"
    )
    acq = ctx.acquisition()
    run_id = _sealed_run(acq)
    if not sc.check("a sealed run to sign", "1 run", run_id, run_id is not None):
        return sc.finish()
    assert run_id is not None
    d = ctx.scratch / "signing"
    shutil.copytree(acq.data_dir, d)
    pw = "oq-correct-horse-battery"
    code, text = daq("users", "add", "oq-reviewer", "--name", "OQ Reviewer", "--roles", "admin,reviewer",
                     "--data-dir", str(d), stdin=f"{pw}\n")  # fmt: skip
    sc.check(
        "daq users add oq-reviewer (password from stdin)",
        "exit 0",
        f"exit {code}: {text.strip()[-150:]}",
        code == 0,
    )
    code, text = daq("runs", "sign", run_id, "--meaning", "reviewed", "--data-dir", str(d),
                     stdin="oq-reviewer\nwrong-password-0000\n")  # fmt: skip
    sc.check(
        "sign with a wrong password",
        "refused, non-zero exit",
        f"exit {code}: {text.strip()[-150:]}",
        code != 0,
    )
    code, text = daq("runs", "sign", run_id, "--meaning", "reviewed", "--comment", "OQ", "--data-dir", str(d),
                     stdin=f"oq-reviewer\n{pw}\n")  # fmt: skip
    sc.check(
        "sign with the right password", "accepted, exit 0", f"exit {code}: {text.strip()[-150:]}", code == 0
    )
    sigs = journal_rows(d, "SELECT user_id, meaning FROM signatures WHERE run_id=?", run_id)
    sc.check(
        "the signature names the signer and the meaning",
        "oq-reviewer reviewed",
        sigs,
        ("oq-reviewer", "reviewed") in [tuple(r) for r in sigs],
    )
    code, text = daq("verify", "--data-dir", str(d))
    sc.check("daq verify (chains and signatures)", "OK", text.strip()[-150:], code == 0)
    return sc.finish()
