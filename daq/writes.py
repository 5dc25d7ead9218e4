"""State-changing commands to instruments, audited.

Instruments are read-only by default: a write is refused unless the instrument's config says
``allow_writes = true``. Every attempt, refused, failed or done, goes to the audit trail with
who, what and why (``instrument_write_refused``, ``instrument_write_failed``,
``instrument_write``), committed before the answer is returned.
"""

from __future__ import annotations

from typing import Any

from daq.errors import DaqError, WriteRefused
from daq.journal.journal import Journal
from daq.supervisor import Supervisor


async def audited_write(
    sup: Supervisor, journal: Journal, command: str, value: str | None, *, actor: str, reason: str
) -> str:
    """Send ``command`` (with ``value``) to ``sup``'s instrument between its polls; returns the
    instrument's answer. Raises :class:`WriteRefused` when writes are disabled, and the
    driver's :class:`DaqError` when the write fails."""
    instrument = sup.name
    detail: dict[str, Any] = {"command": command, "value": value, "reason": reason}
    if not sup.config.allow_writes:
        journal.audit("instrument_write_refused", actor=actor, subject=instrument, detail=detail)
        await journal.flush()
        raise WriteRefused(f"{instrument}: writes are disabled (allow_writes = false)")
    try:
        async with sup.io_lock:
            answer = await sup.driver.write(command, value)
    except DaqError as exc:
        journal.audit(
            "instrument_write_failed", actor=actor, subject=instrument, detail={**detail, "error": str(exc)}
        )
        await journal.flush()
        raise
    journal.audit("instrument_write", actor=actor, subject=instrument, detail={**detail, "answer": answer})
    await journal.flush()
    return answer
