"""A hot item's waiting room, as pure rules (the services read and write the rows).

A buyer who joins gets an arrival number (one sequence for every room, so not
dense per room), or, for buyers who joined before the sale opened in a
``random`` room, one of the early numbers dealt out again in a draw. A place's
*rank* is its position among the room's arrival numbers as a worker knows them
(:func:`rank_in`, 1 = the first who joined, the admitted included). The room's
*serving* counter says who is admitted: every rank up to it. It moves
forward by :func:`admissions_due`, paced by the buyers admitted and not yet
done (``in_flight``, at most ``max_admitted``), by what the stock can still
serve (:func:`buyers_left`), and by a fixed rate when the operator set one.
Ranks past ``sold_out_after`` cannot be reached by the stock left: they are
told ``sold_out`` (until units come back). Times come in as arguments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

MODES = ("fifo", "random")
#: A place's answer: admitted (its turn: an admission token), waiting,
#: sold_out (the stock left cannot reach it), before_draw (a random room
#: before its sale opens: ranks are drawn then), redraw (the place's token
#: predates the draw: its new rank must be read).
STATUSES = ("admitted", "waiting", "sold_out", "before_draw", "redraw")
#: Admissions at a fixed rate never come in a burst larger than this many
#: seconds' worth (a room idle for a minute does not admit a minute at once).
MAX_BURST_S = 1.0
#: A poll is never asked to come back later than this.
MAX_POLL_MS = 30_000


@dataclass(frozen=True)
class Front:
    """What a worker knows of the front of a line (read a few times a second)."""

    serving: int  # ranks <= serving are admitted
    sold_out_after: int | None  # ranks above it cannot be served; None: all can
    rate_per_s: float | None  # admissions per second (fixed, or measured); None: unknown
    opens_at: dt.datetime | None  # the item's sale_starts_at
    drawn: bool  # a random room: its draw has been made (a fifo room: always)


def rank_in(seqs: Sequence[int], seq: int, unseen: int = 0) -> int:
    """The rank of the place numbered ``seq`` among ``seqs``, the room's arrival
    numbers as known (ascending): 1 + the numbers below it. ``unseen``: places
    known to have joined ahead of it that ``seqs`` does not hold yet (a place
    numbered past every one of ``seqs``)."""
    before = bisect_left(seqs, seq)
    if before == len(seqs):
        before += unseen
    return before + 1


def line_front(
    seqs: Sequence[int], serving_seq: int, sold_out_seq: int | None, spare: int | None
) -> tuple[int, int | None]:
    """The serving counter and the sold-out cut-off as ranks among ``seqs``:
    the places numbered up to ``serving_seq`` (admitted), and the places before
    ``sold_out_seq`` (the first waiting place the stock cannot reach); without
    one, every place known and the next ``spare`` to join (None: not measured)."""
    serving = bisect_right(seqs, serving_seq)
    if sold_out_seq is not None:
        return serving, bisect_left(seqs, sold_out_seq)
    if spare is None:
        return serving, None
    return serving, len(seqs) + max(0, spare)


def ahead(rank: int, serving: int) -> int:
    """Places in front of ``rank`` not yet admitted (0 once admitted)."""
    return max(0, rank - serving - 1)


def status(rank: int, final: bool, front: Front, now: dt.datetime) -> str:
    """The answer for the place of ``rank``; ``final``: the rank will not be
    redrawn (a fifo place, or one drawn or joined after the draw)."""
    if not final:
        return "redraw" if front.drawn else "before_draw"
    if rank <= front.serving:
        return "admitted"
    if front.opens_at is not None and now < front.opens_at:
        return "waiting"
    if front.sold_out_after is not None and rank > front.sold_out_after:
        return "sold_out"
    return "waiting"


def passed_over(rank: int, front: Front) -> str:
    """The answer for a place whose rank is passed but which no refresh
    admitted (its join committed after the refresh that admitted past its
    number): ``waiting``, first in line at the next refresh, unless the stock
    left cannot reach it (the cut-off, counted among the places not admitted,
    may then lie below ``serving``): ``sold_out``."""
    if front.sold_out_after is not None and rank > front.sold_out_after:
        return "sold_out"
    return "waiting"


def buyers_left(stock: int, units_per_buyer: int, in_flight: int) -> int:
    """Buyers the stock can still serve beyond those admitted and not done, each
    counted at ``units_per_buyer`` (the item's per-buyer limit, 1 without one)."""
    return max(0, stock // max(1, units_per_buyer) - in_flight)


def admissions_due(
    *,
    in_flight: int,
    max_admitted: int,
    buyers_left: int,
    rate_per_s: float | None,
    elapsed_s: float,
) -> tuple[int, float]:
    """How many more places to admit now, and the seconds of the elapsed time not
    spent (a fixed rate's fraction of a place, carried to the next advance).

    Without a fixed rate the room fills up to ``max_admitted`` in flight, so it
    admits as fast as buyers finish: the selling rate, measured by the line
    itself. Never more than the stock can serve."""
    room = max(0, min(max_admitted - in_flight, buyers_left))
    if rate_per_s is None:
        return room, 0.0
    elapsed = min(max(0.0, elapsed_s), MAX_BURST_S)
    paced = math.floor(rate_per_s * elapsed + 1e-9)
    count = min(room, paced)
    if count < paced:  # held back by the cap or the stock: nothing saved up
        return count, 0.0
    return count, max(0.0, elapsed - count / rate_per_s)


def estimated_wait_s(ahead: int, rate_per_s: float | None) -> int | None:
    """Seconds until a place with ``ahead`` places in front is admitted, at the
    rate the room admits; None when the rate is not known yet."""
    if rate_per_s is None or rate_per_s <= 0:
        return None
    return max(1, math.ceil((ahead + 1) / rate_per_s))


def poll_after_ms(wait_s: int | None, base_ms: int) -> int:
    """When to poll again: a quarter of the wait told, at least ``base_ms``, at
    most MAX_POLL_MS (a long line is not asked every second)."""
    if wait_s is None:
        return base_ms
    return max(base_ms, min(MAX_POLL_MS, wait_s * 1000 // 4))


def sold_out_poll_ms(past: int, near: int, base_ms: int, admission_ttl_s: int) -> int:
    """When a place told sold out, ``past`` places behind the cut-off, should
    poll again. Units that come back (a lapsed or given-up admission, a cancel,
    a restock) reach the places just behind the cut-off first: the next ``near``
    (as many as the room admits at once) poll as the front does. The rest poll
    slowly, but within half an admission's life, so that a unit reaching them
    is not lost to a lapse before they hear of it."""
    if past <= near:
        return base_ms
    return max(base_ms, min(MAX_POLL_MS, admission_ttl_s * 1000 // 2))


def draw(seed: bytes, places: Sequence[tuple[str, int]]) -> dict[str, int]:
    """The numbers of ``places`` (user, arrival number) dealt out again in a
    random order: each buyer's new number depends only on the seed and on who is
    in the draw, never on who came first. The order is HMAC-SHA256(seed, user id), a
    cryptographic seed's keyed hash: unguessable before the seed exists."""
    ranks = sorted(rank for _, rank in places)
    order = sorted(
        (user for user, _ in places),
        key=lambda user: (hmac.new(seed, user.encode(), hashlib.sha256).digest(), user),
    )
    return dict(zip(order, ranks, strict=True))
