"""The reading pipeline's cost per reading in CPU instructions, counted by valgrind (cachegrind).

Builds the daemon of the demo cell (``config/demo.toml``) without starting it and passes
readings of its Modbus synthesizer (100 channels, GOOD values, as the driver makes them)
through its reading pipeline (:mod:`daq.pipeline`): all stages, on readings not yet checked as
canonical (as drivers hand them), and each stage alone on readings already checked. As in
``bench/journal_instructions.py``, each case runs for SMALL and LARGE readings and the
difference divided by LARGE - SMALL is the cost of one reading, less that of building them.
A single stage's figure includes the call and the loop's turn that make it (a few hundred).

    .venv/bin/python bench/pipeline_instructions.py [--tree CHECKOUT] [--small 10000] [--large 30000]

Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from journal_instructions import arguments, per_reading

#: Run inside the measured interpreter: the demo cell's pipeline, and N readings through it
#: (mode "build": only the readings; "all": every stage; "marked": the readings marked
#: canonical, the baseline of a single stage; a stage's name: the marked readings through it).
CHILD = r"""
import sys, time
root, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
from daq.configfile.load import load_config
from daq.daemon import Daemon
from daq.model import Quality, Reading, mark_canonical
pipeline = Daemon(load_config(root + "/config/demo.toml"), seed=1).pipeline
base = time.time_ns()
readings = [Reading("synth-modbus", f"ch{i % 100}", 20.0 + i * 0.01, "degC", Quality.GOOD, base + i, i)
            for i in range(n)]
if mode == "all":
    for r in readings:
        pipeline(r)
elif mode != "build":
    for r in readings:
        mark_canonical(r)
    if mode != "marked":
        stage = dict(zip(pipeline.names, pipeline._stages))[mode]
        for r in readings:
            stage(r)
"""


def main() -> None:
    args = arguments(__doc__)
    if not (args.tree / "daq" / "pipeline.py").exists():
        sys.exit(f"{args.tree} has no reading pipeline (daq/pipeline.py)")
    stages = ["canonicalise", "runs", "equilibrium", "clock", "alarms"]
    cost = per_reading(args, CHILD, ["build", "marked", "all", *stages])
    out = {
        "tree": str(args.tree),
        "readings": [args.small, args.large],
        "build_instructions_per_reading": round(cost["build"]),
        "pipeline_instructions_per_reading": round(cost["all"] - cost["build"]),
        "stage_instructions_per_reading": {s: round(cost[s] - cost["marked"]) for s in stages},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
