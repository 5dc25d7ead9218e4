"""Delivery policy: what a server's answer to a write means, and which points are poison.

The writer reports each request as one typed outcome; this module alone decides what it means:

* :class:`Accepted`: the server stored the points (2xx).
* :class:`Rejected`: the server refuses *this data* (400, 413, 422). Whether the fault is in
  the data or in the server is not known yet: see :func:`settle`.
* :class:`Retry`: try the same body again later (5xx, 408, 425, 429, timeouts, connection
  errors; and, with ``alarm`` set, 401, 403, 404 and other 4xx, which need a person).

A rejected point is *poison* (quarantined, the rest written) only when the same server is shown
to accept other points around it: :func:`settle` isolates the refused points by bisection, sends
each refused point once more, and then sends a point the server accepted before (a *witness*;
sending it again is harmless, a replayed point overwrites itself). Only a point refused twice
while the witness is accepted right after is poison. A server that refuses everything (no
witness, or the witness refused too) or that recovers meanwhile (the point accepted on its
second try) is a server fault: nothing is quarantined, the batch is retried with back-off and
the sink is in alarm.

A batch ends in one :data:`Delivery`: :class:`Delivered` (every point stored or shown to be
poison: quarantine those, then the cursor passes the batch), :class:`ServerFault` (alarm, back
off, read the batch again) or :class:`Stopped` (the sink's final drain ended first: the cursor
stays). :func:`settle` gives the first two; the forwarder's loop says what follows from each.

How long to wait before a retry is decided here too (:func:`retry_wait`), on the project's one
back-off (:class:`daq.backoff.Backoff`: doubling to the cap, jitter only shortening a delay);
the waits an operator is promised are exact: an alarm retries at the cap, a ``Retry-After`` is
honoured as given (up to the sink's ``retry_after_max_s``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from daq.backoff import Backoff

#: Statuses meaning "the server refuses these points" (isolate, then maybe quarantine).
REJECTED = frozenset({400, 413, 422})
#: 4xx statuses meaning "try again later" (back off, no alarm).
TRANSIENT = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server stored every point of the request."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server refused the data of the request (not yet shown to be the data's fault)."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the same body again after a back-off (or after ``after_s``, a ``Retry-After``).

    ``alarm``: the server will not accept anything until a person acts (a bad token, a missing
    bucket): retry at the back-off cap and raise the sink's alarm."""

    message: str
    status: int | None = None
    after_s: float | None = None
    alarm: bool = False


Outcome = Accepted | Rejected | Retry


def classify(status: int, message: str, after_s: float | None = None) -> Outcome:
    """The outcome of an HTTP answer with ``status`` (0: no HTTP answer at all)."""
    if 200 <= status < 300:
        return Accepted()
    if status in REJECTED:
        return Rejected(status, message)
    text = f"HTTP {status}: {message}" if status else message
    if 400 <= status < 500 and status not in TRANSIENT:
        return Retry(text, status, alarm=True)
    return Retry(text, status or None, after_s=after_s if status == 429 else None)


def retry_wait(outcome: Retry, backoff: Backoff, *, retry_after_max_s: float) -> float:
    """Seconds to wait before sending the same body again after ``outcome``.

    Every retry counts as one attempt of ``backoff`` (so the back-off after a ``Retry-After``
    goes on from where it was), but only a plain retry waits its jittered delay: an alarm waits
    exactly the cap ("retrying at the cap", as the operator is told) and a 429's ``Retry-After``
    exactly what the server asked, cut to ``retry_after_max_s``."""
    delay = backoff.next_delay()
    if outcome.alarm:
        return backoff.cap_s
    if outcome.after_s is not None:
        return min(outcome.after_s, retry_after_max_s)
    return delay


@dataclass(frozen=True, slots=True)
class Delivered:
    """Every point of a batch was stored by the server or shown to be poison: once the poison
    points are quarantined, the cursor passes the batch."""

    #: Lines the server accepted (each counted once).
    accepted: int
    #: The indexes of the poison points, each with the server's refusal of it.
    poison: tuple[tuple[int, Rejected], ...] = ()
    #: The line the server accepted last (for the next batch's confirmations), if any.
    witness: str | None = None


@dataclass(frozen=True, slots=True)
class ServerFault:
    """The server refused points of a batch although none was shown to be at fault: nothing is
    quarantined and the cursor stays; the sink is in alarm, backs off and sends the batch again."""

    refusal: Rejected
    #: The line the server accepted last, if any (kept for the next attempt's confirmations).
    witness: str | None = None


@dataclass(frozen=True, slots=True)
class Stopped:
    """The sink is stopping and its final drain ended before the batch was delivered (a write
    failed, or the drain's time ran out): the cursor stays before the batch, which waits in the
    journal for the next start."""


#: What became of one batch.
Delivery = Delivered | ServerFault | Stopped


@dataclass(slots=True)
class _Tally:
    """What :func:`settle` has found so far."""

    witness: str | None
    poison: list[tuple[int, Rejected]] = field(default_factory=list)
    accepted: int = 0


#: Sends lines until the server accepts or refuses them (retries are the sender's business).
Send = Callable[[Sequence[str]], Awaitable[Accepted | Rejected]]


def max_refusals(n: int) -> int:
    """Refusals in a row after which a batch of ``n`` lines is taken to meet a server fault:
    enough to isolate a poison point by bisection (about two per level), far fewer than the
    ``2n - 1`` requests bisecting a batch the server refuses entirely would take."""
    return 2 * max(1, n).bit_length() + 4


async def settle(lines: Sequence[str], send: Send, witness: str | None = None) -> Delivered | ServerFault:
    """Deliver ``lines`` through ``send``; find the poison points, if any (see the module doc).

    ``witness`` is a line this server accepted before (``None`` if none is known). The whole
    batch is sent as ``lines`` itself (the same object), so the caller can reuse its body.
    A refused point is confirmed as soon as a witness is known; more than
    :func:`max_refusals` refusals in a row end the attempt as a server fault."""
    out = _Tally(witness)
    unconfirmed: list[tuple[int, Rejected]] = []
    refusals = 0
    limit = max_refusals(len(lines))

    async def confirm(index: int) -> Rejected | None:
        """Send a refused point again, then the witness; the refusal if it is a server fault."""
        nonlocal refusals
        again = await send(lines[index : index + 1])
        if isinstance(again, Accepted):
            # Refused once, accepted now: the server recovered; the point was never poison.
            out.accepted += 1
            out.witness = lines[index]
            refusals = 0
            return None
        assert out.witness is not None
        check = await send([out.witness])
        if isinstance(check, Rejected):
            # The server now refuses a point it accepted before: the server, not the data.
            return check
        refusals = 0
        out.poison.append((index, again))
        return None

    stack = [(0, len(lines))] if lines else []
    while stack:
        lo, hi = stack.pop()
        result = await send(lines if (lo, hi) == (0, len(lines)) else lines[lo:hi])
        if isinstance(result, Accepted):
            out.accepted += hi - lo
            out.witness = lines[hi - 1]
            refusals = 0
        else:
            refusals += 1
            if refusals > limit:
                return ServerFault(result, out.witness)
            if hi - lo == 1:
                unconfirmed.append((lo, result))
            else:
                mid = (lo + hi) // 2
                stack.append((mid, hi))
                stack.append((lo, mid))
        while unconfirmed and out.witness is not None:
            fault = await confirm(unconfirmed.pop(0)[0])
            if fault is not None:
                return ServerFault(fault, out.witness)
    if unconfirmed:
        # Not one point accepted, none before: nothing shows that the data is at fault.
        return ServerFault(unconfirmed[0][1], out.witness)
    return Delivered(out.accepted, tuple(out.poison), out.witness)
