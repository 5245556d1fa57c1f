"""The fronts of the open lines and the refresher that moves them.

Each worker keeps, per open room, the front of its line and its arrival numbers
(ecommerce/services/roomboard.py), read again at most every QUEUE_REFRESH_MS by
whichever of the line's requests finds them stale. That refresh first advances
the rooms that are due, each by the one instance that takes its row without
waiting (FOR NO KEY UPDATE SKIP LOCKED): the draw, admissions as the in-flight
cap, the stock and a fixed rate allow, the first place the stock cannot reach,
all counted exactly with the row held. Then it reads the open rooms, and the
arrival numbers each line gained, in one statement for all of them.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.domain import queueing
from ecommerce.errors import ServiceBusy
from ecommerce.observability import metrics
from ecommerce.repositories.rooms import RoomRepository, RoomRow
from ecommerce.services import Shop
from ecommerce.services.roomboard import Line, RoomFront

log = logging.getLogger(__name__)

#: The measured admission rate looks back at most this far.
RATE_WINDOW_S = 60.0


def fronts(shop: Shop) -> dict[int, RoomFront]:
    """Every open room's front, as this worker knows it (refreshed when stale).

    A refresh the database cannot answer (a lock or a connection not had in
    time, a primary being replaced) leaves the last view standing for another
    ``QUEUE_REFRESH_MS``: waiting buyers' polls are answered from it, as always;
    only a worker that never read the rooms answers 503."""
    board = shop.room_board
    known = board.fresh()
    if known is not None:
        return known
    try:
        before = board.known()
        read = shop.transaction(lambda session: _refresh(session, shop, before), "queue_refresh")
    except ServiceBusy:
        last = board.keep()  # the newest view: another request may have read one meanwhile
        if last is None:
            raise
        log.warning("the waiting rooms could not be read; answering from the last view")
        return last
    except BaseException:
        board.store(None)  # the next request tries again
        raise
    board.store(read)
    for front_ in read.values():
        metrics.observe_room(
            front_.item_id,
            line=front_.line_length,
            admitted=front_.in_flight,
            rate=front_.front.rate_per_s,
            wait=queueing.estimated_wait_s(max(0, front_.line_length - 1), front_.front.rate_per_s),
        )
    metrics.forget_rooms_but(read)
    return read


def front(shop: Shop, item_id: int) -> RoomFront | None:
    return fronts(shop).get(item_id)


def front_of(row: RoomRow, line: Line) -> RoomFront:
    """The room's front, in ranks of ``line`` (the room's arrival numbers as known)."""
    rate = row.rate_per_s if row.rate_per_s is not None else row.admission_rate
    # Without a place the stock cannot reach, how many more it can serve.
    spare = (
        row.sold_out_after - row.serving - row.line_length
        if row.sold_out_after is not None
        else None
    )
    serving, sold_out_after = queueing.line_front(
        line.seqs, row.serving_seq, row.sold_out_seq, spare
    )
    return RoomFront(
        item_id=row.item_id,
        mode=row.mode,
        front=queueing.Front(
            serving=serving,
            sold_out_after=sold_out_after,
            rate_per_s=float(rate) if rate else None,
            opens_at=row.sale_starts_at,
            drawn=row.mode == "fifo" or row.drawn_at is not None,
        ),
        in_flight=row.in_flight,
        line_length=row.line_length,
        max_admitted=row.max_admitted,
        admission_ttl_s=row.admission_ttl_s,
        line=line,
    )


def _refresh(session: Session, shop: Shop, before: dict[int, RoomFront]) -> dict[int, RoomFront]:
    """The open rooms' fronts; those due are advanced first by whoever takes
    their row. ``before``: this worker's last view, whose lines are extended."""
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
    if advanced:
        rows = rooms.open_rooms()
    settle_s, at = shop.room_board.settle_s, time.monotonic()
    lines = {
        row.item_id: before[row.item_id].line if row.item_id in before else Line() for row in rows
    }
    floors = {item: line.floor(at, settle_s) for item, line in lines.items()}
    above = rooms.seqs_above(floors)
    return {
        row.item_id: front_of(
            row, lines[row.item_id].extended(floors[row.item_id], above[row.item_id], at, settle_s)
        )
        for row in rows
    }


def _advance(rooms: RoomRepository, room: RoomRow, now: dt.datetime) -> None:
    """Move the room's front (its row is held): the draw, admissions, the cut-off."""
    item = room.item_id
    in_flight, stock_now = rooms.in_flight(item, now)
    per_buyer = room.per_user_limit or 1
    stock = int(stock_now)
    opened = room.sale_starts_at is None or now >= room.sale_starts_at
    drawn = room.mode == "fifo" or room.drawn_at is not None
    if not drawn and opened:
        seed = secrets.token_bytes(32)
        rooms.record_draw(
            item, queueing.draw(seed, rooms.undrawn(item, room.sale_starts_at)), seed, now
        )
        drawn = True
    serving, serving_seq, advanced_at = room.serving, room.serving_seq, now
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
            serving += len(admitted)
            serving_seq = max(serving_seq, max(admitted))
            in_flight += len(admitted)
        advanced_at = now - dt.timedelta(seconds=carried)
    servable = queueing.buyers_left(stock, per_buyer, in_flight)
    # The admissions of the last minute of this opening after the first of
    # them, over the time since it: neither the idle time before a crowd came
    # nor the first fill of the cap (admitted in one instant) is a pace.
    started = max(room.opened_at, room.sale_starts_at or room.opened_at)
    since = max(started, now - dt.timedelta(seconds=RATE_WINDOW_S))
    waiting, first_past, recent, first = rooms.line(item, servable, since)
    elapsed = (now - first).total_seconds() if first is not None else 0.0
    window = elapsed if recent and elapsed > 0 else 1.0
    rooms.save_front(
        item,
        now,
        serving=serving,
        serving_seq=serving_seq,
        in_flight=in_flight,
        line_length=waiting,
        # the places the stock reaches, counted from the first admitted
        sold_out_after=serving + servable,
        sold_out_seq=first_past,
        admission_rate=Decimal(recent / window).quantize(Decimal("0.001")),
        advanced_at=advanced_at,
    )
