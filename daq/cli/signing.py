"""``daq runs review RUN`` and ``daq runs sign RUN --meaning ...``: QC review and e-signatures.

``review`` reads the journal (read-only) and prints what a reviewer must see before signing.
``sign`` asks for the signer's user id and password (never on the command line; see
:mod:`daq.cli.users` for scripts), checks the rules of :mod:`daq.runs.signatures` and appends
the signature; it writes to the journal, so it runs with the daemon stopped. The separation of
duties comes from the ``[signatures]`` section of ``--config``, else of the run's own config
snapshot in the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from daq.cli.argtypes import add_data_dir
from daq.timefmt import human


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("review", help="what a reviewer must see before signing a run")
    r.add_argument("run_id", metavar="RUN", help="the run id (see daq runs list)")
    add_data_dir(r)
    s = sub.add_parser(
        "sign", help="sign a sealed run: reviewed, approved or rejected (asks id and password)"
    )
    s.add_argument("run_id", metavar="RUN", help="the sealed run to sign")
    s.add_argument(
        "--meaning", required=True, choices=("reviewed", "approved", "rejected"),
        help="what the signature means (reviewed comes before approved)",
    )  # fmt: skip
    s.add_argument("--comment", default=None, help="printed with the signature")
    add_data_dir(s)
    s.add_argument("--config", type=Path, default=None, help="take [users] and [signatures] from this file")


def review_lines(data_dir: Path, run_id: str) -> list[str]:
    """The review of ``run_id`` as text lines."""
    from daq.errors import DaqError
    from daq.runs import figures
    from daq.runs.checked import journal_run, open_journal
    from daq.runs.export import decoded
    from daq.runs.signatures import current_analyses, signature_status, signatures_of
    from daq.runs.store import get_run, load_run

    conn = open_journal(data_dir)
    try:
        try:
            data, _, _ = journal_run(conn, run_id)
            integrity = "records match their chain hashes" + (
                " and the recorded seal" if data.run.get("seal") else ""
            )
        except DaqError as exc:
            if "no run" in str(exc):
                raise
            data = load_run(conn, run_id)
            integrity = f"FAILED: {exc}"
        run = get_run(conn, run_id)
        current = current_analyses(conn, run_id)
        sigs = signatures_of(conn, run_id)
    finally:
        conn.close()
    s = figures.summarize(decoded(data))
    out = [f"run {run_id}  batch {s['batch']}  product {s['product']}  nuclide {s['nuclide']}"]
    ended = human(run["ended_ns"]) if run.get("ended_ns") else "OPEN (not sealed: it cannot be signed)"
    out.append(f"  operator {s['operator']}; started {human(run['started_ns'])} by {run.get('started_by')}")
    out.append(f"  ended    {ended}")
    out.append(f"  seal     {s['seal'] or 'none'}")
    out.append(f"  integrity: {integrity}")
    clock = run.get("clock") or {}
    sync = clock.get("synchronised")
    sync_text = "synchronised" if sync else "NOT synchronised" if sync is False else "sync state unknown"
    out.append(
        f"clock: {sync_text} at start (source {clock.get('source', '-')}); {s['clock_steps']} clock step(s)"
    )
    q = s["quality"]
    out.append(f"readings: {s['readings']} (GOOD {q['GOOD']}, UNCERTAIN {q['UNCERTAIN']}, BAD {q['BAD']})")
    out.append(f"gaps and non-GOOD spans: {len(s['gaps'])}")
    for g in s["gaps"]:
        out.append(
            f"  {human(g['from_ns'])} .. {human(g['to_ns'])} {g['instrument']}/{g['channel']} "
            f"{g['quality']} x{g['count']}: {g['reason'] or '-'}"
        )
    alarms = [
        r for r in data.rows("readings")
        if "alarm" in r["channel"] and r["value"] not in (None, 0, 0.0)
    ]  # fmt: skip
    out.append(f"alarm readings (alarm channels not 0): {len(alarms)}")
    for r in alarms[:20]:
        out.append(f"  {human(r['acq_ns'])} {r['instrument']}/{r['channel']} = {r['value']:g}")
    if len(alarms) > 20:
        out.append(f"  ({len(alarms) - 20} more; 20 of {len(alarms)} shown; all are in the export)")
    out.append(f"radio-TLC analyses: {len(s['rcp'])}")
    for r in s["rcp"]:
        verdict = "no verdict" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
        rcp = "-" if r["rcp_percent"] is None else f"{r['rcp_percent']:.2f} %"
        state = "current" if r["analysis_id"] in current else "superseded"
        out.append(f"  {r['trace_id']} {r['analysis_id']} ({state}): RCP {rcp} {verdict}")
    out.append(f"annotations: {len(run.get('annotations') or [])}")
    for a in run.get("annotations") or []:
        out.append(f"  {human(a['ts_ns'])} {a['actor']}: {a['text']} (reason: {a['reason']})")
    out.append(f"signatures: {len(sigs)}")
    for sig in sigs:
        st = signature_status(sig, current)
        note = (
            ""
            if st["covers_current"]
            else f" (covers earlier analysis versions: {', '.join(st['superseded'])})"
        )
        out.append(
            f"  {human(sig['ts_ns'])} {sig['printed_name']} ({sig['user_id']}): "
            f"{sig['meaning'].upper()}{note}"
        )
        if sig.get("comment"):
            out.append(f"    comment: {sig['comment']}")
    live = [sig for sig in sigs if signature_status(sig, current)["covers_current"]]
    unsigned = [aid for aid in current if not any(aid in sig["analyses"] for sig in sigs)]
    todo = []
    if not any(x["meaning"] == "reviewed" for x in live):
        todo.append("review")
    if not any(x["meaning"] in ("approved", "rejected") for x in live):
        todo.append("approval")
    if unsigned:
        todo.append(f"analysis versions no signature covers: {', '.join(unsigned)}")
    out.append("unsigned: " + ("; ".join(todo) if todo else "nothing (reviewed and approved/rejected)"))
    return out


async def _sign(args: argparse.Namespace) -> dict[str, Any]:
    from daq.cli.users import Prompter
    from daq.configfile.snapshot import site_config
    from daq.runs.checked import open_journal
    from daq.runs.clock import read_sync_state
    from daq.runs.signatures import sign
    from daq.runs.store import get_run
    from daq.users import journal_session

    ask = Prompter()
    async with journal_session(args.data_dir) as journal:
        conn = open_journal(args.data_dir)
        try:
            try:
                sha = get_run(conn, args.run_id).get("config_sha256")
            except Exception:
                sha = None
            cfg = site_config(conn, args.config, sha)
            user, password = ask.credentials("signer")
            return sign(
                journal, conn, run_id=args.run_id, meaning=args.meaning, comment=args.comment,
                user_id=user, password=password, users=cfg.users, policy=cfg.signatures,
                clock_state=read_sync_state(cfg.clock.sync_source),
            )  # fmt: skip
        finally:
            conn.close()


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.runs_command == "review":
        for line in review_lines(args.data_dir, args.run_id):
            print(line, file=out)
        return 0
    sig = asyncio.run(_sign(args))
    print(
        f"signed run {sig['run_id']}: {sig['meaning'].upper()} by {sig['printed_name']} ({sig['user_id']}) "
        f"at {human(sig['ts_ns'])}; signature {sig['signature_id']} over seal {sig['seal'][:16]}... "
        f"and {len(sig['analyses'])} analysis version(s)",
        file=out,
    )
    return 0


def summary_lines(data_dir: Path) -> list[str]:
    """For ``daq demo``'s closing summary: the commands that take the last sealed run through QC."""
    from daq.runs import store
    from daq.runs.checked import open_journal

    conn = open_journal(data_dir)
    try:
        sealed = [r for r in store.list_runs(conn) if r.get("seal")]
    finally:
        conn.close()
    if not sealed:
        return []
    run, d = sealed[-1]["run_id"], f"--data-dir {data_dir}"
    return [
        "  QC: review, sign and report the last sealed run (docs/qc-guide.md walks through it):",
        f'    daq users add qa-admin --name "QA Admin" --roles admin {d}   # the first account: an admin',
        f'    daq users add rev --name "Rita Reviewer" --roles reviewer {d}   # asks for an admin',
        f'    daq users add appr --name "Arno Approver" --roles approver {d}',
        f"    daq runs review {run} {d}",
        f"    daq runs sign {run} --meaning reviewed {d}",
        f"    daq runs sign {run} --meaning approved {d}",
        f"    daq report {run} {d} --out {run}.pdf",
        f"    daq export {run} {d} --out {run}-export && daq verify --export {run}-export",
    ]
