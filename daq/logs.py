"""structlog set-up: JSON lines when stdout is not a terminal, a readable console otherwise.
Under systemd, each JSON line carries a ``<N>`` syslog-priority prefix for journald.

State changes are logged once; nothing is logged per reading (a rendered line costs ~14 µs).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for the process; ``json=None`` picks JSON when not on a TTY."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_json:
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
        from daq import systemd

        if systemd.stderr_is_journal():
            # journald turns a "<N>" prefix into the entry's PRIORITY (journalctl -p).
            renderer = systemd.PriorityPrefix(renderer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
