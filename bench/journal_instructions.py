"""The journal's cost per reading in CPU instructions, counted by valgrind (cachegrind).

Timings on a shared machine vary by 5 to 30 % from one run to the next; an instruction count
does not, so two versions of the writer can be compared to within a few hundred instructions
per reading. For each variant, the burst of ``bench/journal.py`` runs under
``valgrind --tool=cachegrind`` twice (SMALL and LARGE readings); the difference divided by
LARGE - SMALL is the cost of one reading, without the interpreter's start-up. A run that only
builds the readings is counted the same way and subtracted, so the figures are the journal's
own: append, canonical check, numbering, hash payload, hash, insert and commit.

Variants (where the checkout has them):

* ``as given``: readings as a source makes them (the writer checks that each is canonical);
* ``pipeline-checked``: readings marked canonical, as the daemon's reading pipeline hands them
  to the journal (the check was made before, on the event loop);
* ``payload v1``: as given, hashed with the version 1 payload of journals created before
  version 2.

    .venv/bin/python bench/journal_instructions.py [--tree CHECKOUT] [--small 10000] [--large 30000]

``--tree`` measures another checkout of the project (its own ``.venv``), for a before/after
comparison on the same machine. Needs valgrind (Debian: ``apt-get install valgrind``); takes a
few minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Run inside the measured interpreter: build N readings with the checkout's own
#: ``bench/journal.py`` and, unless only building, journal them as its burst does.
CHILD = r"""
import asyncio, importlib.util, pathlib, sys, tempfile
root = pathlib.Path(sys.argv[1]); mode = sys.argv[2]; n = int(sys.argv[3])
sys.path.insert(0, str(root))
spec = importlib.util.spec_from_file_location("journal_bench", root / "bench" / "journal.py")
jb = importlib.util.module_from_spec(spec); spec.loader.exec_module(jb)
readings = jb.make_readings(n)
if mode == "payload-v1":
    from daq.journal import chain
    chain.PAYLOAD_VERSION = 1
if mode == "pipeline-checked":
    from daq.model import mark_canonical
    for r in readings:
        mark_canonical(r)
if mode != "build":
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(jb.journal_rate(pathlib.Path(d), readings))
"""


def count_instructions(tree: Path, code: str, argv: list[str]) -> int:
    """Instructions executed by ``tree``'s Python running ``code`` with ``argv``, counted by
    valgrind's cachegrind (the whole process, start-up included)."""
    proc = subprocess.run(
        [
            "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            str(tree / ".venv" / "bin" / "python"), "-c", code, *argv,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    m = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def arguments(doc: str | None) -> argparse.Namespace:
    """The command line shared by the instruction benchmarks (``--tree``, ``--small``,
    ``--large``); exits when valgrind is missing."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout to measure")
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=30_000)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    args.tree = args.tree.resolve()
    return args


def per_reading(args: argparse.Namespace, code: str, modes: list[str]) -> dict[str, float]:
    """Instructions per reading of each mode of ``code`` (run as ``code TREE MODE N``): the
    count for ``args.large`` readings less that for ``args.small``, per reading, two counts
    at a time."""
    jobs = [(m, n) for m in modes for n in (args.small, args.large)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(
            zip(jobs, pool.map(lambda j: count_instructions(args.tree, code, [str(args.tree), j[0], str(j[1])]), jobs),
                strict=True)
        )  # fmt: skip
    span = args.large - args.small
    return {m: (counts[(m, args.large)] - counts[(m, args.small)]) / span for m in modes}


def main() -> None:
    args = arguments(__doc__)
    modes = ["build", "as-given"]
    if (args.tree / "daq" / "canonical.py").exists():
        modes += ["pipeline-checked", "payload-v1"]
    cost = per_reading(args, CHILD, modes)
    build = cost["build"]
    out: dict[str, object] = {
        "tree": str(args.tree),
        "readings": [args.small, args.large],
        "build_instructions_per_reading": round(build),
        "journal_instructions_per_reading": {m: round(cost[m] - build) for m in modes if m != "build"},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
