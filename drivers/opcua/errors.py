"""asyncua's errors as the project's: the one place this driver maps them (httpx style)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from daq.errors import ConnectError

if TYPE_CHECKING:
    from asyncua.ua.uaerrors import UaStatusCodeError


def status_text(exc: UaStatusCodeError) -> str:
    from asyncua import ua

    code = getattr(exc, "code", None)
    if code is None:
        return str(exc)
    sc = ua.StatusCode(code)
    return f"{sc.name}: {sc.doc}" if sc.doc else sc.name


def describe(exc: BaseException) -> str:
    from asyncua.ua.uaerrors import UaStatusCodeError

    if isinstance(exc, UaStatusCodeError):
        return status_text(exc)
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def map_exceptions(what: str) -> Iterator[None]:
    """Turn a socket, timeout or OPC UA error raised inside into :class:`ConnectError`
    (``what`` says what was being done); the project's own errors pass unchanged."""
    from asyncua.ua.uaerrors import UaError

    try:
        yield
    except (OSError, TimeoutError, UaError, ValueError) as exc:
        raise ConnectError(f"{what}: {describe(exc)}") from exc
