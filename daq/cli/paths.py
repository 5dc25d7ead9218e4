"""Checks on the files and directories a command is asked to write (``--out``).

Done before any work, so a typo costs a one-line error instead of a traceback after a long
export, and nothing is created where the user did not ask: a missing parent directory is an
error, not something to make silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from daq.errors import DaqError


def _parent_ready(path: Path, option: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DaqError(f"{option} {path}: the directory {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DaqError(f"{option} {path}: the directory {parent} is not writable")


def out_dir(path: Path, option: str = "--out") -> Path:
    """A directory to create or fill: new, or an existing empty directory, in a writable parent."""
    if path.exists():
        if not path.is_dir():
            raise DaqError(f"{option} {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DaqError(f"{option} {path}: is not writable")
        return path
    _parent_ready(path, option)
    return path


def out_file(path: Path, suffixes: tuple[str, ...], option: str = "--out") -> str:
    """A file to write in an existing, writable directory; returns its suffix (one of ``suffixes``)."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise DaqError(f"{option} {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise DaqError(f"{option} {path}: is a directory")
    _parent_ready(path, option)
    return suffix
