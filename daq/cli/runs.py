"""``daq runs start|stop|annotate|t0|list|show|review|sign``: runs (batches).

``start``, ``stop``, ``annotate`` and ``t0`` ask the running daemon through its local API
(``--api``, else ``$DAQ_API``, else ``http://127.0.0.1:8470``, as ``daq status`` and ``daq tail``)
with a bearer token read from the environment variable ``--token-env`` (default
``DAQ_API_TOKEN``) or a file ``--token-file`` (a systemd credential). ``list`` and ``show``
read the journal directly (``--data-dir``), so they work with the daemon stopped.
``review`` and ``sign`` are QC's (:mod:`daq.cli.signing`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from daq.api.client import DEFAULT_API, check_api_url, default_api
from daq.cli import signing
from daq.cli.argtypes import add_data_dir
from daq.errors import DaqError
from daq.runs import store
from daq.runs.checked import open_journal
from daq.timefmt import human
from daq.timeparse import parse_instant

NAME = "runs"
HELP = "start, stop, annotate and list runs (batches); mark t0; review and sign them"


def _api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api", default=None, metavar="URL",
        help=f"the daemon's local API (default $DAQ_API or {DEFAULT_API})",
    )  # fmt: skip
    p.add_argument("--token-env", default="DAQ_API_TOKEN", metavar="NAME", help="variable holding the token")
    p.add_argument("--token-file", type=Path, default=None, help="file holding the token (a credential)")
    p.add_argument("--actor", default=None, help="who does this (default: the login name)")
    p.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    s = sub.add_parser("start", help="open a run in the running daemon")
    s.add_argument("--batch", required=True, help="the batch (lot) number the run produces")
    s.add_argument("--product", required=True, help="the product, e.g. [177Lu]Lu-PSMA-617")
    s.add_argument("--nuclide", required=True, help="the run's nuclide, e.g. Lu-177 (see daq decay)")
    s.add_argument("--operator", required=True, help="who operates the cell for this run")
    s.add_argument("--method", default=None, help="the method or batch record version followed")
    s.add_argument("--reason", default=None, help="why the run is opened by hand (audited)")
    _api_args(s)
    s = sub.add_parser("stop", help="close and seal the open run")
    s.add_argument("--reason", default=None, help="why the run is closed by hand (audited)")
    _api_args(s)
    s = sub.add_parser("annotate", help="add a note, with its reason, to the open run")
    s.add_argument("text", help="the note")
    s.add_argument("--reason", required=True, help="why it is noted (audited)")
    s.add_argument("--instrument", default=None, help="the instrument the note is about")
    _api_args(s)
    s = sub.add_parser("t0", help="mark t0 (separation/labelling) now or at --at")
    s.add_argument("--reason", required=True, help="what happened at t0 (audited)")
    s.add_argument("--instrument", default=None, help="only this instrument's assays (default: the run's)")
    at = s.add_mutually_exclusive_group()
    at.add_argument(
        "--at", default=None, metavar="TIME",
        help="t0 as ISO 8601 with a UTC offset, e.g. 2026-03-01T09:30:00+01:00 (default: now)",
    )  # fmt: skip
    at.add_argument("--at-ns", type=int, default=None, metavar="NS", help="t0 as UTC nanoseconds")
    _api_args(s)
    s = sub.add_parser("list", help="list the journal's runs")
    add_data_dir(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("show", help="one run's record")
    s.add_argument("run_id", metavar="RUN", help="the run id (see daq runs list)")
    add_data_dir(s)
    signing.add_parsers(sub)


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            token: str = Path(args.token_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DaqError(f"cannot read the token file: {exc}") from None
    else:
        token = str(os.environ.get(args.token_env, ""))
    if not token:
        raise DaqError(f"no API token: set ${args.token_env} or give --token-file")
    return token


def call(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the daemon's API; returns the JSON answer or raises naming the problem."""
    body = {k: v for k, v in body.items() if v is not None}
    body["actor"] = args.actor or getpass.getuser()
    api = check_api_url(args.api or default_api())
    req = urllib.request.Request(  # noqa: S310 (the URL is the operator's own --api)
        api.rstrip("/") + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {_token(args)}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        raise DaqError(f"the daemon refused ({exc.code}): {text}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DaqError(f"cannot reach the daemon at {api}: {exc}") from None


def _print_run(run: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    end = human(run["ended_ns"]) if run.get("ended_ns") else "open"
    print(f"run {run['run_id']}", file=out)
    for key in ("batch", "product", "nuclide", "operator", "method", "config_sha256", "seal"):
        print(f"  {key:<14} {run.get(key) if run.get(key) is not None else '-'}", file=out)
    print(f"  {'started':<14} {human(run['started_ns'])} by {run.get('started_by')}", file=out)
    print(f"  {'ended':<14} {end}" + (f" by {run.get('ended_by')}" if run.get("ended_by") else ""), file=out)
    for name, inst in (run.get("instruments") or {}).items():
        dev = inst.get("device") or {}
        print(
            f"  instrument     {name} ({inst.get('kind')}): {dev.get('model', '-')} "
            f"serial {dev.get('serial') or '-'} firmware {dev.get('firmware') or '-'}",
            file=out,
        )
    for t0 in run.get("t0", []):
        print(
            f"  t0             {human(t0['ts_ns'])} {t0.get('instrument') or ''} ({t0.get('reason')})",
            file=out,
        )
    for a in run.get("annotations", []):
        print(f"  annotation     {human(a['ts_ns'])} {a['actor']}: {a['text']} ({a['reason']})", file=out)


def main(args: argparse.Namespace) -> int:
    cmd = args.runs_command
    if cmd in ("review", "sign"):
        return signing.main(args)
    if cmd in ("list", "show"):
        conn = open_journal(args.data_dir)
        try:
            if cmd == "show":
                _print_run(store.get_run(conn, args.run_id))
                return 0
            runs = store.list_runs(conn)
        finally:
            conn.close()
        if args.json:
            print(json.dumps(runs, indent=2, sort_keys=True))
            return 0
        print(f"{'run':<40} {'batch':<24} {'product':<20} {'started':<29} {'ended':<29} sealed")
        for r in runs:
            end = human(r["ended_ns"]) if r.get("ended_ns") else "open"
            print(
                f"{r['run_id']:<40} {r.get('batch') or '-':<24} {r.get('product') or '-':<20} "
                f"{human(r['started_ns']):<29} {end:<29} {'yes' if r.get('seal') else 'no'}"
            )
        return 0
    if cmd == "start":
        body = {k: getattr(args, k) for k in ("batch", "product", "nuclide", "operator", "method", "reason")}
        answer = call(args, "/api/runs", body)
    elif cmd == "stop":
        answer = call(args, "/api/runs/active/stop", {"reason": args.reason})
    elif cmd == "annotate":
        body = {"text": args.text, "reason": args.reason, "instrument": args.instrument}
        answer = call(args, "/api/runs/active/annotations", body)
    else:
        at_ns = parse_instant(args.at, "--at", ago=False) if args.at else args.at_ns
        body = {"reason": args.reason, "instrument": args.instrument, "ts_ns": at_ns}
        answer = call(args, "/api/runs/active/t0", body)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    elif cmd in ("start", "stop"):
        _print_run(answer)
    else:
        print(f"{cmd} recorded for run {answer.get('run_id') or '-'} at {answer.get('ts')}")
    return 0


def summary_lines(data_dir: Path) -> list[str]:
    """The runs of a journal, for ``daq demo``'s closing summary."""
    conn = open_journal(data_dir)
    try:
        runs = store.list_runs(conn)
    finally:
        conn.close()
    lines = [f"  runs: {len(runs)} ({sum(1 for r in runs if r.get('seal'))} sealed)"]
    for r in runs[-5:]:
        state = f"sealed {r['seal'][:16]}..." if r.get("seal") else "open"
        lines.append(f"    {r['run_id']}  batch {r.get('batch')}  {state}")
    if runs:
        lines.append(f"  export one: daq export {runs[-1]['run_id']} --data-dir {data_dir} --out export-dir")
    return lines
