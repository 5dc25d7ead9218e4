"""The data directory's lock, ``daemon.lock``: held by the running daemon (its run manager)
and by every tool that writes to a journal offline (retention, sinks, users, exports), so
none of them writes under another."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from daq.errors import DaqError

LOCK_FILE = "daemon.lock"


def take_lock(data_dir: Path) -> IO[str]:
    """Hold ``data_dir/daemon.lock`` exclusively (released when the file is closed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    f = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise DaqError(f"{data_dir / LOCK_FILE} is held: a daemon is running on {data_dir}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
