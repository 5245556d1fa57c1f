"""A fair waiting room in front of a hot item's add and pay.

The state lives in PostgreSQL, so every instance sees one line
(ecommerce/repositories/rooms.py); the rules are pure
(ecommerce/domain/queueing.py); each worker caches the fronts of the open lines
(ecommerce/services/roomboard.py).

* Joining (:func:`join`) draws a rank from the room's sequence and inserts the
  place (ON CONFLICT DO NOTHING: one place per buyer): no lock waited for,
  the item's row untouched. The answer comes at once: rank, places ahead, the
  wait, when to poll, and a signed place token.
* Polling (:func:`poll`) reads the place token and this worker's cached front:
  no statement while the place waits. Only a place whose turn has come (or
  whose rank a draw changed) is read, once, to sign its admission token with
  the admission's own expiry.
* The front moves in a refresh: the worker that finds a room's refresh due and
  takes its row without waiting (SKIP LOCKED) draws a random room's early
  buyers once the sale opens, admits the next places as the in-flight cap, the
  stock and a fixed rate allow, finds the first rank the stock cannot reach,
  and writes the counters on the room's own row. The others only read it.
* Add and pay of a roomed item need an admission token of the buyer's for the
  item, judged in their batches (:func:`roomed_items`, :func:`admission_refusal`);
  a pay that sells it marks the place done, and an admission that lapses no
  longer counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ecommerce import metrics
from ecommerce.domain import queueing
from ecommerce.errors import Conflict, InvalidRequest, NotFound, QueueRequired
from ecommerce.repositories import ItemRepository
from ecommerce.repositories.rooms import PlaceRow, RoomRepository, RoomRow
from ecommerce.services import Shop
from ecommerce.services.roomboard import RoomFront
from ecommerce.tokens import (
    AdmissionClaims,
    BadQueueToken,
    PlaceClaims,
    issue_admission_token,
    issue_place_token,
    read_admission_token,
    read_place_token,
)

log = logging.getLogger(__name__)

#: The measured admission rate looks back at most this far.
RATE_WINDOW_S = 60.0


# --- Results -------------------------------------------------------------------


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

    @property
    def keeps_polling(self) -> bool:
        return self.status in ("waiting", "before_draw", "sold_out")


@dataclass(frozen=True)
class RoomView:
    item_id: int
    open: bool
    mode: str
    rate_per_s: Decimal | None
    max_admitted: int
    admission_ttl_s: int
    serving: int
    in_flight: int
    line_length: int
    sold_out_after: int | None
    admission_rate_per_s: Decimal | None
    estimated_wait_s: int | None
    drawn_at: dt.datetime | None
    refreshed_at: dt.datetime


@dataclass(frozen=True)
class RoomOptions:
    """An admin's PUT: ``open`` always; the others None to keep (or default)."""

    open: bool
    mode: str | None = None
    rate_per_s: Decimal | float | None = None
    max_admitted: int | None = None
    admission_ttl_s: int | None = None
    clear_rate: bool = False  # rate_per_s sent as null: no fixed rate


# --- The fronts ------------------------------------------------------------------


def fronts(shop: Shop) -> dict[int, RoomFront]:
    """Every open room's front, as this worker knows it (refreshed when stale)."""
    board = shop.room_board
    known = board.fresh()
    if known is not None:
        return known
    read: dict[int, RoomFront] | None = None
    try:
        rows = shop.transaction(lambda session: _refresh(session, shop), "queue_refresh")
        read = {row.item_id: _front_of(row) for row in rows}
        for front_ in read.values():
            metrics.observe_room(
                front_.item_id,
                line=front_.line_length,
                admitted=front_.in_flight,
                rate=front_.front.rate_per_s,
                wait=queueing.estimated_wait_s(
                    max(0, front_.line_length - 1), front_.front.rate_per_s
                ),
            )
        metrics.forget_rooms_but(read)
    finally:
        board.store(read)
    return read


def front(shop: Shop, item_id: int) -> RoomFront | None:
    return fronts(shop).get(item_id)


def _front_of(row: RoomRow) -> RoomFront:
    rate = row.rate_per_s if row.rate_per_s is not None else row.admission_rate
    return RoomFront(
        item_id=row.item_id,
        mode=row.mode,
        front=queueing.Front(
            serving=row.serving,
            sold_out_after=row.sold_out_after,
            rate_per_s=float(rate) if rate else None,
            opens_at=row.sale_starts_at,
            drawn=row.mode == "fifo" or row.drawn_at is not None,
        ),
        in_flight=row.in_flight,
        line_length=row.line_length,
        max_admitted=row.max_admitted,
        admission_ttl_s=row.admission_ttl_s,
    )


def _refresh(session: Session, shop: Shop) -> list[RoomRow]:
    """The open rooms; those due are advanced first by whoever takes their row."""
    rooms = RoomRepository(session)
    rows = rooms.open_rooms()
    now = shop.clock()
    due = now - dt.timedelta(seconds=shop.room_board.refresh_s)
    advanced = False
    for row in rows:
        if row.refreshed_at <= due:
            locked = rooms.lock_if_due(row.item_id, due)
            if locked is not None:  # someone else holds it: they advance it
                _advance(rooms, locked, now)
                advanced = True
    return rooms.open_rooms() if advanced else rows


def _advance(rooms: RoomRepository, room: RoomRow, now: dt.datetime) -> None:
    """Move the room's front (its row is held): the draw, admissions, the cut-off."""
    item = room.item_id
    in_flight = rooms.in_flight(item, now)
    per_buyer = room.per_user_limit or 1
    stock = int(room.stock)
    opened = room.sale_starts_at is None or now >= room.sale_starts_at
    drawn = room.mode == "fifo" or room.drawn_at is not None
    if not drawn and opened:
        seed = secrets.token_bytes(32)
        rooms.record_draw(
            item, queueing.draw(seed, rooms.undrawn(item, room.sale_starts_at)), seed, now
        )
        drawn = True
    serving, advanced_at = room.serving, now
    if opened and drawn:
        rate = float(room.rate_per_s) if room.rate_per_s is not None else None
        count, carried = queueing.admissions_due(
            in_flight=in_flight,
            max_admitted=room.max_admitted,
            buyers_left=queueing.buyers_left(stock, per_buyer, in_flight),
            rate_per_s=rate,
            elapsed_s=(now - room.advanced_at).total_seconds(),
        )
        admitted = rooms.admit(item, count, now, now + dt.timedelta(seconds=room.admission_ttl_s))
        if admitted:
            serving = max(serving, max(admitted))
            in_flight += len(admitted)
        advanced_at = now - dt.timedelta(seconds=carried)
    servable = queueing.buyers_left(stock, per_buyer, in_flight)
    started = max(room.opened_at, room.sale_starts_at or room.opened_at)
    window = min(RATE_WINDOW_S, max(1.0, (now - started).total_seconds()))
    waiting, first_past, last_rank, recent = rooms.line(
        item, servable, now - dt.timedelta(seconds=window)
    )
    if first_past is not None:
        sold_out_after: int | None = first_past - 1
    else:  # every waiting place fits: so do the next (servable - waiting) to join
        sold_out_after = max(last_rank or 0, serving) + (servable - waiting)
    rooms.save_front(
        item,
        now,
        serving=serving,
        in_flight=in_flight,
        line_length=waiting,
        sold_out_after=sold_out_after,
        admission_rate=Decimal(recent / window).quantize(Decimal("0.001")),
        advanced_at=advanced_at,
    )


# --- A buyer's place ----------------------------------------------------------------


def join(shop: Shop, item_id: int, user_id: str) -> PlaceView:
    """The buyer's place in the item's line: a new one at the back, or the one
    they have (one place per buyer per item)."""
    if front(shop, item_id) is None:
        raise _no_room(item_id)

    def work(session: Session) -> PlaceRow | None:
        return RoomRepository(session).join(item_id, user_id, shop.clock())

    place = shop.transaction(work, "queue_join")
    room = front(shop, item_id)  # after the insert: it may have let this place in
    if place is None or room is None:
        raise _no_room(item_id)
    final = room.front.drawn or room.mode == "fifo"
    return _answer(shop, room, PlaceClaims(item_id, user_id, place.rank, final), shop.clock())


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


def _answer(shop: Shop, room: RoomFront, claims: PlaceClaims, now: dt.datetime) -> PlaceView:
    status = queueing.status(claims.rank, claims.final, room.front, now)
    if status in ("admitted", "redraw"):
        return _answer_from_the_place(shop, room, claims, now)
    base_ms = shop.room_poll_ms
    token = issue_place_token(shop.secret_key, claims)
    if status == "before_draw":
        return PlaceView(
            claims.item_id, claims.user_id, status, None, None, None, None, base_ms, token
        )
    ahead = queueing.ahead(claims.rank, room.front.serving)
    wait = queueing.estimated_wait_s(ahead, room.front.rate_per_s) if status == "waiting" else None
    return PlaceView(
        claims.item_id,
        claims.user_id,
        status,
        claims.rank,
        ahead + 1,
        ahead,
        wait,
        queueing.poll_after_ms(wait, base_ms),
        token,
    )


def _answer_from_the_place(
    shop: Shop, room: RoomFront, claims: PlaceClaims, now: dt.datetime
) -> PlaceView:
    """A place whose turn came (its admission, lapsed, done) or whose rank a
    draw changed: read once, a plain read."""

    def work(session: Session) -> PlaceRow | None:
        return RoomRepository(session).place(claims.item_id, claims.user_id)

    place = shop.transaction(work, "queue_place")
    if place is None:
        raise NotFound(f"{claims.user_id} has no place in the line for item {claims.item_id}")
    final = PlaceClaims(claims.item_id, claims.user_id, place.rank, room.front.drawn)
    token = issue_place_token(shop.secret_key, final)
    base_ms = shop.room_poll_ms

    def ended(status: str) -> PlaceView:
        return PlaceView(
            final.item_id, final.user_id, status, place.rank, None, None, None, base_ms, token
        )

    if place.done_at is not None:
        return ended("done")
    if place.admitted_at is not None and place.admission_expires_at is not None:
        if place.admission_expires_at <= now:
            return ended("lapsed")
        expires = place.admission_expires_at
        admission = issue_admission_token(
            shop.secret_key,
            AdmissionClaims(final.item_id, final.user_id, place.rank, int(expires.timestamp())),
        )
        return PlaceView(
            final.item_id,
            final.user_id,
            "admitted",
            place.rank,
            None,
            None,
            None,
            base_ms,
            token,
            admission,
            expires,
        )
    if queueing.status(place.rank, final.final, room.front, now) == "admitted":
        # Its rank is passed but the refresh has not marked it yet (its join
        # committed after the refresh's read): first in line at the next one.
        return PlaceView(
            final.item_id, final.user_id, "waiting", place.rank, 1, 0, None, base_ms, token
        )
    return _answer(shop, room, final, now)


def _no_room(item_id: int) -> NotFound:
    return NotFound(f"item {item_id} has no open waiting room: add and pay without one")


# --- Admissions at add and pay ---------------------------------------------------------


def join_path(item_id: int, user_id: str) -> str:
    return f"/items/{item_id}/queue/{user_id}"


def queue_required(item_id: int, user_id: str, why: str | None = None) -> QueueRequired:
    reason = why or f"item {item_id} has a waiting room: join it and wait for your turn"
    return QueueRequired(
        f"{reason} (POST {join_path(item_id, user_id)})",
        details={"item_id": item_id, "join": join_path(item_id, user_id)},
    )


def admitted_items(
    shop: Shop, user_id: str, tokens: Iterable[str]
) -> tuple[frozenset[int], str | None]:
    """The items the buyer's admission tokens admit them to now, and why a token
    was refused (the first reason), if one was."""
    now = shop.clock().timestamp()
    admitted: set[int] = set()
    why: str | None = None
    for token in tokens:
        try:
            claims = read_admission_token(shop.secret_key, token, now)
        except BadQueueToken as bad:
            why = why or str(bad)
            continue
        if claims.user_id != user_id:
            why = why or "the admission token is another buyer's"
            continue
        admitted.add(claims.item_id)
    return frozenset(admitted), why


def roomed_items(session: Session, shop: Shop) -> frozenset[int]:
    """Inside a use case's transaction (an add's or a pay's batch, on its own
    connection): the items whose room is open, as this worker knows them; when
    that is older than QUEUE_REFRESH_MS, one plain read on ``session`` (the
    rooms are advanced by the line's own requests, never here)."""
    board = shop.room_board
    known = board.fresh()
    if known is not None:
        return frozenset(known)
    read: dict[int, RoomFront] | None = None
    try:
        read = {row.item_id: _front_of(row) for row in RoomRepository(session).open_rooms()}
    finally:
        board.store(read)
    return frozenset(read)


def admission_refusal(
    shop: Shop,
    user_id: str,
    item_ids: Iterable[int],
    tokens: Iterable[str],
    roomed: frozenset[int],
) -> QueueRequired | None:
    """Why the buyer may not add or pay for ``item_ids`` now: an item whose room
    is open (``roomed``) that none of ``tokens`` admits them to."""
    needed = set(item_ids) & roomed
    if not needed:
        return None
    tokens = tuple(tokens)
    admitted, why = admitted_items(shop, user_id, tokens)
    missing = sorted(needed - admitted)
    if not missing:
        return None
    if why is None and tokens:
        why = "the admission token is for another item"
    return queue_required(missing[0], user_id, why)


def mark_paid(session: Session, places: Iterable[tuple[str, int]], now: dt.datetime) -> None:
    """In a pay's transaction: these (buyer, item) admissions are done."""
    RoomRepository(session).mark_paid(places, now)


# --- The operator's side -------------------------------------------------------------


def configure_room(shop: Shop, item_id: int, options: RoomOptions) -> RoomView:
    """Open, close or change an item's room (a new room gets the defaults)."""
    if options.mode is not None and options.mode not in queueing.MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(queueing.MODES)}")

    def work(session: Session) -> RoomView:
        if ItemRepository(session).get(item_id) is None:
            raise NotFound(f"item {item_id} does not exist")
        rooms = RoomRepository(session)
        now = shop.clock()
        current = rooms.lock(item_id)
        values: dict[str, Any] = {
            "is_open": options.open,
            "mode": options.mode or (current.mode if current else "fifo"),
            "rate_per_s": (
                None
                if options.clear_rate
                else options.rate_per_s
                if options.rate_per_s is not None
                else current.rate_per_s
                if current
                else None
            ),
            "max_admitted": options.max_admitted
            or (current.max_admitted if current else shop.room_max_admitted),
            "admission_ttl_s": options.admission_ttl_s
            or (current.admission_ttl_s if current else shop.room_admission_ttl_s),
        }
        if current is None:
            # a new room with its sequence of ranks; or another admin made it
            # a moment ago: change it
            if not rooms.create(item_id, values, now):
                rooms.change(item_id, values, now)
        else:
            if values["mode"] != current.mode and rooms.has_places(item_id):
                raise Conflict(
                    f"the room of item {item_id} has places: its mode stays {current.mode}",
                    details={"item_id": item_id, "mode": current.mode},
                )
            rooms.change(item_id, values, now)
        row = rooms.get(item_id)
        assert row is not None
        return _room_view(row)

    view = shop.transaction(work, "configure_room")
    shop.room_board.invalidate()
    return view


def room(shop: Shop, item_id: int) -> RoomView:
    """An item's room and the front of its line (refreshed first when due)."""
    fronts(shop)

    def work(session: Session) -> RoomRow | None:
        return RoomRepository(session).get(item_id)

    row = shop.transaction(work, "room")
    if row is None:
        raise NotFound(f"item {item_id} has no waiting room")
    return _room_view(row)


def _room_view(row: RoomRow) -> RoomView:
    rate = row.rate_per_s if row.rate_per_s is not None else row.admission_rate
    return RoomView(
        item_id=row.item_id,
        open=row.is_open,
        mode=row.mode,
        rate_per_s=row.rate_per_s,
        max_admitted=row.max_admitted,
        admission_ttl_s=row.admission_ttl_s,
        serving=row.serving,
        in_flight=row.in_flight,
        line_length=row.line_length,
        sold_out_after=row.sold_out_after,
        admission_rate_per_s=row.admission_rate,
        estimated_wait_s=queueing.estimated_wait_s(
            max(0, row.line_length - 1), float(rate) if rate else None
        ),
        drawn_at=row.drawn_at,
        refreshed_at=row.refreshed_at,
    )
