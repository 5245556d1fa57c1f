"""A buyer's place: join the line, poll it, leave it.

* Joining (:func:`join`) inserts the place, its arrival number the column's
  default (ON CONFLICT DO NOTHING: one place per buyer): no lock waited for,
  the item's row untouched. The answer comes at once: rank, places ahead, the
  wait, when to poll, and a signed place token. A place this worker's view of
  the line does not hold yet is ranked behind every number the view holds and
  the places the INSERT counted between them and its own.
* Polling (:func:`poll`) reads the place token and this worker's view: no
  statement while the place waits. Only a place whose turn has come (or whose
  number a draw changed) is read, once, to sign its admission token with the
  admission's own expiry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ecommerce.domain import queueing
from ecommerce.errors import InvalidRequest, NotFound
from ecommerce.repositories.rooms import PlaceRow, RoomRepository
from ecommerce.services import Shop
from ecommerce.services.roomboard import RoomFront
from ecommerce.services.rooms.line import front
from ecommerce.tokens import (
    AdmissionClaims,
    BadQueueToken,
    PlaceClaims,
    issue_admission_token,
    issue_place_token,
    read_place_token,
)


@dataclass(frozen=True)
class PlaceView:
    item_id: int
    user_id: str
    status: str  # queueing.STATUSES but "redraw", or "lapsed", "done"
    rank: int | None  # None before a random room's draw
    position: int | None
    ahead: int | None
    estimated_wait_s: int | None
    poll_after_ms: int
    place_token: str
    admission_token: str | None = None
    admission_expires_at: dt.datetime | None = None
    seq: int | None = None  # the arrival number (not shown: not dense per room)

    @property
    def keeps_polling(self) -> bool:
        return self.status in ("waiting", "before_draw", "sold_out")


def join(shop: Shop, item_id: int, user_id: str) -> PlaceView:
    """The buyer's place in the item's line: a new one at the back, or the one
    they have (one place per buyer per item)."""
    room = front(shop, item_id)
    if room is None:
        raise _no_room(item_id)
    after = room.line.known_to
    joined = _insert(shop, (item_id, user_id, after))
    room = front(shop, item_id)  # after the insert: it may have let this place in
    if joined is None or room is None:
        raise _no_room(item_id)
    place, unseen = joined
    if room.line.known_to != after:  # read again since: it holds the place
        unseen = None
    final = room.front.drawn or room.mode == "fifo"
    claims = PlaceClaims(item_id, user_id, place.seq, final)
    return _answer(shop, room, claims, shop.clock(), unseen or 0)


Join = tuple[int, str, int]  # (item, user, the last arrival number the worker's view holds)
Joined = tuple[PlaceRow, int | None] | None


def _insert(shop: Shop, request: Join) -> Joined:
    """The buyer's place (and the places ahead its worker's view misses): with
    the cart's combining on, the joins waiting meanwhile go in one statement
    (a crowd joins thousands a second), else alone."""
    if shop.cart_combining is None:
        return _insert_alone(shop, request)
    return shop.combiner(
        "queue-joiner",
        shop.cart_combining,
        run_batch=lambda batch: _insert_batch(shop, batch),
        run_alone=lambda request: _insert_alone(shop, request),
    ).submit(request)


def _insert_alone(shop: Shop, request: Join) -> Joined:
    (joined,) = _insert_batch(shop, [request])
    return joined


def _insert_batch(shop: Shop, batch: Sequence[Join]) -> list[Joined]:
    """Each join's place, in arrival order, from one statement (a buyer who
    joined twice in the batch gets their one place twice)."""
    distinct = list(dict.fromkeys((item, user) for item, user, _ in batch))
    after = {(item, user): known for item, user, known in reversed(batch)}

    def work(session: Session) -> list[Joined]:
        joins = [(item, user, after[item, user]) for item, user in distinct]
        return RoomRepository(session).join_many(joins, shop.clock())

    places = dict(zip(distinct, shop.transaction(work, "queue_join"), strict=True))
    answers: list[Joined] = []
    for item, user, known in batch:
        joined = places[item, user]
        if joined is not None and known != after[item, user]:
            # the same buyer again, from a view read since: its count of the
            # places ahead was taken from another view; rank it from its own
            joined = (joined[0], None)
        answers.append(joined)
    return answers


def poll(shop: Shop, item_id: int, user_id: str, place_token: str) -> PlaceView:
    """Where the place of ``place_token`` stands. No statement while it waits."""
    try:
        claims = read_place_token(shop.secret_key, place_token)
    except BadQueueToken as bad:
        raise InvalidRequest("the X-Place-Token is not a valid place token") from bad
    if claims.item_id != item_id or claims.user_id != user_id:
        raise InvalidRequest("the X-Place-Token is for another item or buyer")
    room = front(shop, item_id)
    if room is None:
        raise _no_room(item_id)
    return _answer(shop, room, claims, shop.clock())


def leave(shop: Shop, item_id: int, user_id: str) -> None:
    """Give the place up (an admission it held no longer counts)."""

    def work(session: Session) -> bool:
        return RoomRepository(session).leave(item_id, user_id)

    if not shop.transaction(work, "queue_leave"):
        raise NotFound(f"{user_id} has no place in the line for item {item_id}")


def _rank(room: RoomFront, seq: int, unseen: int = 0) -> int:
    """The place's rank in this worker's view (``unseen``: places ahead of a
    place numbered past the view, which the view does not hold)."""
    return queueing.rank_in(room.line.seqs, seq, unseen if seq > room.line.known_to else 0)


def _answer(
    shop: Shop, room: RoomFront, claims: PlaceClaims, now: dt.datetime, unseen: int = 0
) -> PlaceView:
    rank = _rank(room, claims.seq, unseen)
    status = queueing.status(rank, claims.final, room.front, now)
    if status in ("admitted", "redraw"):
        return _answer_from_the_place(shop, room, claims, now)
    base_ms = shop.room_poll_ms
    token = issue_place_token(shop.secret_key, claims)
    if status == "before_draw":
        return PlaceView(
            claims.item_id,
            claims.user_id,
            status,
            None,
            None,
            None,
            None,
            base_ms,
            token,
            seq=claims.seq,
        )
    ahead = queueing.ahead(rank, room.front.serving)
    wait = queueing.estimated_wait_s(ahead, room.front.rate_per_s) if status == "waiting" else None
    return PlaceView(
        claims.item_id,
        claims.user_id,
        status,
        rank,
        ahead + 1,
        ahead,
        wait,
        _poll_after(room, status, rank, wait, base_ms),
        token,
        seq=claims.seq,
    )


def _poll_after(room: RoomFront, status: str, rank: int, wait: int | None, base_ms: int) -> int:
    cut_off = room.front.sold_out_after
    if status == "sold_out" and cut_off is not None:
        past = rank - cut_off
        return queueing.sold_out_poll_ms(past, room.max_admitted, base_ms, room.admission_ttl_s)
    return queueing.poll_after_ms(wait, base_ms)


def _answer_from_the_place(
    shop: Shop, room: RoomFront, claims: PlaceClaims, now: dt.datetime
) -> PlaceView:
    """A place whose turn came (its admission, lapsed, done) or whose number a
    draw changed: read once, a plain read."""

    def work(session: Session) -> PlaceRow | None:
        return RoomRepository(session).place(claims.item_id, claims.user_id)

    place = shop.transaction(work, "queue_place")
    if place is None:
        raise NotFound(f"{claims.user_id} has no place in the line for item {claims.item_id}")
    final = PlaceClaims(claims.item_id, claims.user_id, place.seq, room.front.drawn)
    token = issue_place_token(shop.secret_key, final)
    base_ms = shop.room_poll_ms
    rank = _rank(room, place.seq)

    def read_back(
        status: str, admission: str | None = None, expires: dt.datetime | None = None
    ) -> PlaceView:
        """A place whose state the database just told (done, lapsed, admitted)."""
        return PlaceView(
            final.item_id,
            final.user_id,
            status,
            rank,
            None,
            None,
            None,
            base_ms,
            token,
            admission,
            expires,
            seq=place.seq,
        )

    if place.done_at is not None:
        return read_back("done")
    if place.admitted_at is not None and place.admission_expires_at is not None:
        if place.admission_expires_at <= now:
            return read_back("lapsed")
        expires = place.admission_expires_at
        admission = issue_admission_token(
            shop.secret_key,
            AdmissionClaims(final.item_id, final.user_id, place.seq, int(expires.timestamp())),
        )
        return read_back("admitted", admission, expires)
    if queueing.status(rank, final.final, room.front, now) == "admitted":
        # Its number is passed but no refresh admitted it (its join committed
        # after the refresh's read): first in line, or past the stock; either
        # way next for a unit that comes back, so it polls as the front does.
        return PlaceView(
            final.item_id,
            final.user_id,
            queueing.passed_over(rank, room.front),
            rank,
            1,
            0,
            None,
            base_ms,
            token,
            seq=place.seq,
        )
    return _answer(shop, room, final, now)


def _no_room(item_id: int) -> NotFound:
    return NotFound(f"item {item_id} has no open waiting room: add and pay without one")
