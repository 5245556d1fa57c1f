"""The operator's side of the waiting rooms: open, change or close an item's
room (:func:`configure_room`) and show it with the front of its line
(:func:`room`; :func:`room_view` for a room read elsewhere, as the console's
snapshot does). A room is a row: opening one makes no schema object.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.domain import queueing
from ecommerce.errors import Conflict, InvalidRequest, NotFound
from ecommerce.repositories import ItemRepository
from ecommerce.repositories.rooms import RoomRepository, RoomRow
from ecommerce.services import Shop
from ecommerce.services.rooms.line import fronts


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
            # a new room; or another admin made it a moment ago: change it
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
        return room_view(row)

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
    return room_view(row)


def room_view(row: RoomRow) -> RoomView:
    """The room as the admin API and the console show it: its options, its
    front as the last refresh left it, and the wait told to the back of the line."""
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
