"""The fields of a run: checks of what an operator gives, and run ids."""

from __future__ import annotations

import datetime as dt
import re

from daq.errors import DaqError
from daq.physics import UnknownNuclide, nuclide

UNSPECIFIED = "unspecified"


class RunError(DaqError):
    """A run command that cannot be carried out (no run open, one already open, bad field)."""


def clean_nuclide(text: str) -> str:
    if text.strip().lower() in ("", UNSPECIFIED):
        return UNSPECIFIED
    try:
        return nuclide(text).symbol
    except UnknownNuclide as exc:
        raise RunError(str(exc)) from None


def required(**fields: str) -> None:
    for key, value in fields.items():
        if not value or not value.strip():
            raise RunError(f"{key} must not be empty")


def new_run_id(batch: str, now_ns: int, known: set[str]) -> str:
    """``<UTC stamp>-<batch made safe>``, numbered when ``known`` already holds it (the same
    batch twice within a second); the new id is added to ``known``."""
    stamp = dt.datetime.fromtimestamp(now_ns / 1e9, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", batch).removesuffix(f"-{stamp}")[:40].strip("_.") or "run"
    run_id, n = f"{stamp}-{safe}", 1
    while run_id in known:
        n += 1
        run_id = f"{stamp}-{safe}-{n}"
    known.add(run_id)
    return run_id
