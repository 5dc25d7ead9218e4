"""``daq validate``: the IQ/OQ validation pack (see docs/validation.md).

``daq validate [--iq] [--oq] [--scenario ID ...] [--config SITE.toml] --out DIR`` writes
``validation.pdf``, ``validation.json``, ``evidence/`` and ``MANIFEST.json``; exits 1 when a
scenario failed or a requirement could not be verified (each is a deviation in the report).
``daq validate --verify DIR`` checks a pack against its manifest.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

from daq import __version__
from daq.cli.argtypes import seconds

NAME = "validate"
HELP = "run the IQ/OQ validation pack: a PDF, JSON and evidence traced from requirements to results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iq", action="store_true", help="installation qualification of this machine")
    p.add_argument("--oq", action="store_true", help="operational qualification against the simulators")
    p.add_argument("--pq", action="store_true", help="read the site's --config for --duration S (PQ aid)")
    p.add_argument(
        "--duration", type=seconds, default=600.0, metavar="S", help="how long --pq reads (default 600)"
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="ID",
        help="run only these scenario ids (repeatable)",
    )
    p.add_argument(
        "--config", type=Path, default=None, metavar="SITE.toml", help="the site config to check (IQ)"
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="a new (or empty) directory for the pack"
    )
    p.add_argument(
        "--verify", type=Path, default=None, metavar="DIR", help="check a pack against its manifest"
    )


def main(args: argparse.Namespace) -> int:
    from daq import logs
    from daq.cli.validation import iq, oq, pack, requirements

    if args.verify is not None:
        ok, line = pack.verify_pack(args.verify)
        print(f"{args.verify}: {'OK' if ok else 'FAILED'}: {line}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    if args.out is None:
        print("daq validate: give --out DIR (or --verify DIR)", file=sys.stderr)
        return 2
    if args.pq and args.config is None:
        print("daq validate: --pq reads the site's instruments: give --config SITE.toml", file=sys.stderr)
        return 2
    if not (args.iq or args.oq or args.pq):
        args.iq = args.oq = True
    out: Path = args.out
    logs.configure("warning")  # the scenarios' own faults would otherwise fill the terminal
    if out.exists() and any(out.iterdir()):
        print(f"daq validate: {out}: not empty; give a new directory", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    reqs = requirements.load()
    known = set(iq.IQ_IDS) | set(oq.SCENARIOS)
    problems = requirements.trace_problems(reqs, known)
    if problems:
        print(f"daq validate: {requirements.default_path()}: {problems[0]}", file=sys.stderr)
        return 2
    unknown = [s for s in args.scenario or [] if s not in known]
    if unknown:
        print(
            f"daq validate: --scenario {unknown[0]}: unknown; known: {', '.join(sorted(known))}",
            file=sys.stderr,
        )
        return 2
    only = args.scenario
    data_dir = None
    if args.config is not None:
        from daq.configfile.load import load_config

        try:
            data_dir = Path(load_config(args.config).daemon.data_dir)
        except Exception:  # the IQ-CONFIG scenario records the error
            data_dir = None
    results = []
    if args.iq:
        results += [
            s for s in iq.run_iq(out, config_path=args.config, data=data_dir) if not only or s.id in only
        ]
    if args.oq:
        with tempfile.TemporaryDirectory(prefix="daq-validate-") as scratch:
            results += oq.run_oq(out, Path(scratch), only)
    if args.pq:
        from daq.cli.validation.pq import run_pq

        with tempfile.TemporaryDirectory(prefix="daq-validate-pq-") as scratch:
            results.append(run_pq(out, Path(scratch), args.config, args.duration))
    system = {
        "hotcell-daq": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "config": str(args.config) if args.config else "none (OQ uses the demo cell)",
        "requirements": str(requirements.default_path()),
    }
    for s in results:
        if s.id == "IQ-CONFIG":
            sha = next((st.actual for st in s.steps if st.action == "config SHA-256"), None)
            if sha:
                system["config SHA-256"] = sha
    doc = pack.build(system, reqs, results)
    pack.write(out, doc)
    sm = doc["summary"]
    print(f"{out}: {sm['verdict']}: " + ", ".join(f"{n} {k}" for k, n in sorted(sm["scenarios"].items())))
    for d in doc["deviations"]:
        print(f"  deviation {d['scenario']} ({d['status']}): {d['detail']}"[:300])
    return 0 if not doc["deviations"] else 1
