"""structlog set-up: JSON lines when stdout is not a terminal, a readable console otherwise.
Under systemd, each JSON line carries a ``<N>`` syslog-priority prefix for journald.

Libraries (asyncua, pymodbus, asyncio itself) log through the standard :mod:`logging` tree;
its root handler renders their records with the same processors and renderer, so the log
stays one JSON object per line (a traceback becomes the ``exception`` field, never loose
lines of text) and carries the library's logger name in ``logger``.

State changes are logged once; nothing is logged per reading (a rendered line costs ~14 µs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import structlog

#: structlog level name -> syslog priority, for journald's ``<N>`` line prefix.
SYSLOG_PRIORITY = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is the stream systemd connected to journald (``$JOURNAL_STREAM`` holds
    its ``device:inode``, systemd.exec(5)): only then is a ``<N>`` prefix understood."""
    env = os.environ if environ is None else environ
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class PriorityPrefix:
    """Wraps a structlog renderer and prefixes each line with ``<N>``, its syslog priority.

    journald strips the prefix and stores it as ``PRIORITY`` (``SyslogLevelPrefix=`` is on by
    default), so ``journalctl -p warning`` works while the message stays one JSON object.
    """

    def __init__(self, renderer: Callable[..., Any]):
        self.renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        level = str(event_dict.get("level", method_name)).lower()
        priority = SYSLOG_PRIORITY.get(level, SYSLOG_PRIORITY["info"])
        return f"<{priority}>{self.renderer(logger, method_name, event_dict)}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (as structlog's
    PrintLogger is given it), so a replaced stream never gets a stale handle."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


#: The handler :func:`configure` put on the root logger (replaced on a second call).
_ROOT_HANDLER: logging.Handler | None = None

#: Libraries whose INFO lines are routine chatter (each connect, each session): kept from
#: the log unless the level is debug. Their warnings and errors always come through.
CHATTY_LIBRARIES = ("asyncua", "pymodbus")


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog, and route the standard ``logging`` tree through the same renderer;
    ``json=None`` picks JSON when not on a TTY."""
    global _ROOT_HANDLER
    use_json = (not sys.stderr.isatty()) if json is None else json
    level_no = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
    ]
    renderer: structlog.types.Processor
    if use_json:
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
        if stderr_is_journal():
            # journald turns a "<N>" prefix into the entry's PRIORITY (journalctl -p).
            renderer = PriorityPrefix(renderer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Records of the standard library's loggers: the same fields, then the same renderer.
    foreign: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    final: list[structlog.types.Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if use_json:
        final.append(structlog.processors.format_exc_info)
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=foreign, processors=[*final, renderer])
    )
    root = logging.getLogger()
    if _ROOT_HANDLER is not None:
        root.removeHandler(_ROOT_HANDLER)
    root.addHandler(handler)
    root.setLevel(level_no)
    _ROOT_HANDLER = handler
    for name in CHATTY_LIBRARIES:
        library = logging.getLogger(name)
        if library.level < logging.WARNING:
            library.setLevel(level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
