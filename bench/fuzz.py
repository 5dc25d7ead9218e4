"""Fuzz every parser: the tests marked ``fuzz`` under Hypothesis's long profile.

The suite runs each with a few hundred examples; here each gets ``--examples`` (100,000 by
default) of arbitrary input, which may only ever raise the driver's protocol error. Prints
JSON with each test's outcome and time.

    .venv/bin/python bench/fuzz.py [--examples 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "HYPOTHESIS_MAX_EXAMPLES": str(args.examples)}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "fuzz", "-p", "no:cacheprovider",
             "-o", "timeout=0", f"--junitxml={report}"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        tests = []
        for case in ET.parse(report).getroot().iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            tests.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "examples": args.examples,
                    "seconds": round(float(case.get("time", 0)), 1),
                    "passed": not failed,
                }
            )
    summary = {
        "benchmark": "fuzz",
        "parsers_tested": len(tests),
        "examples_per_test": args.examples,
        "all_passed": proc.returncode == 0 and all(t["passed"] for t in tests),
        "elapsed_s": round(elapsed, 1),
        "tests": tests,
    }
    print(json.dumps(summary, indent=2))
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
