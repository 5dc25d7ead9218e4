"""argparse ``type=`` converters shared by the commands: each refuses what makes no sense
(``nan``, ``inf``, negative durations) with a message argparse prints on one line."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

#: A command's own ``--duration`` runs at most a year; anything longer is a typo.
MAX_DURATION_S = 366 * 86400.0


def seconds(text: str) -> float:
    """A finite number of seconds, more than 0 and at most :data:`MAX_DURATION_S`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_DURATION_S):
        raise argparse.ArgumentTypeError(
            f"expected seconds more than 0 and at most {MAX_DURATION_S:g}, got {text!r}"
        )
    return value


def finite(text: str) -> float:
    """Any finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


#: Offline commands read this data directory when ``--data-dir`` is not given.
DATA_DIR_ENV = "DAQ_DATA_DIR"


def add_data_dir(p: argparse.ArgumentParser, help: str = "the daemon's data directory") -> None:
    """``--data-dir``, defaulting to ``$DAQ_DATA_DIR``; required when that is not set."""
    env = os.environ.get(DATA_DIR_ENV)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env) if env else None,
        required=not env,
        metavar="DIR",
        help=f"{help} (default ${DATA_DIR_ENV})",
    )
