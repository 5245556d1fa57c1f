"""Admissions at add and pay: an add of a roomed item, and a pay whose cart
holds one, need an admission token of the buyer's for it, judged in their
batches (:func:`roomed_items`, :func:`admission_refusal`); a pay that sells it
marks the place done (:func:`mark_paid`), and an admission that lapses no
longer counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from sqlalchemy.orm import Session

from ecommerce.errors import QueueRequired
from ecommerce.repositories.rooms import RoomRepository
from ecommerce.services import Shop
from ecommerce.services.roomboard import Line, RoomFront
from ecommerce.services.rooms.line import front_of
from ecommerce.tokens import BadQueueToken, read_admission_token


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
) -> tuple[dict[int, int], str | None]:
    """The items the buyer's admission tokens name for them and have not expired
    ({item: the place's arrival number}), and why a token was refused (the first
    reason), if one was. Whether each place is still admitted is the database's
    to say (:func:`admitted_places`)."""
    now = shop.clock().timestamp()
    admitted: dict[int, int] = {}
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
        admitted[claims.item_id] = claims.seq
    return admitted, why


def admitted_places(
    session: Session, shop: Shop, pairs: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """In an add's or a pay's batch: of these (buyer, item) pairs, the places
    admitted now ({pair: arrival number}), one statement. A token is spent when
    its place is: paid, left, or lapsed."""
    return RoomRepository(session).admitted_now(pairs, shop.clock())


def roomed_items(session: Session, shop: Shop) -> frozenset[int]:
    """Inside a use case's transaction (an add's or a pay's batch, on its own
    connection): the items whose room is open, as this worker knows them; when
    that is older than QUEUE_REFRESH_MS, one plain read on ``session`` (the
    rooms are advanced, and their lines read, by the line's own requests, never
    here: each room keeps the line this worker had)."""
    board = shop.room_board
    known = board.fresh()
    if known is not None:
        return frozenset(known)
    read: dict[int, RoomFront] | None = None
    try:
        before = board.known()
        read = {
            row.item_id: front_of(
                row, before[row.item_id].line if row.item_id in before else Line()
            )
            for row in RoomRepository(session).open_rooms()
        }
    finally:
        board.store(read)
    return frozenset(read)


def admission_refusal(
    shop: Shop,
    user_id: str,
    item_ids: Iterable[int],
    tokens: Iterable[str],
    roomed: frozenset[int],
    places: Mapping[tuple[str, int], int],
) -> QueueRequired | None:
    """Why the buyer may not add or pay for ``item_ids`` now: an item whose room
    is open (``roomed``) that none of ``tokens`` admits them to, or whose place
    is no longer admitted (``places``: :func:`admitted_places`)."""
    needed = set(item_ids) & roomed
    if not needed:
        return None
    tokens = tuple(tokens)
    admitted, why = admitted_items(shop, user_id, tokens)
    missing = sorted(
        item
        for item in needed
        if item not in admitted or places.get((user_id, item)) != admitted[item]
    )
    if not missing:
        return None
    if any(item in admitted for item in missing):
        why = "the admission was spent (paid, left or lapsed): join the line again"
    elif why is None and tokens:
        why = "the admission token is for another item"
    return queue_required(missing[0], user_id, why)


def mark_paid(session: Session, places: Iterable[tuple[str, int]], now: dt.datetime) -> None:
    """In a pay's transaction: these (buyer, item) admissions are done."""
    RoomRepository(session).mark_paid(places, now)
