"""Waiting rooms and the places in their lines.

Locking: joining takes no lock a refresh holds (an INSERT ... ON CONFLICT DO
NOTHING into ``queue_places``; its foreign key takes FOR KEY SHARE on the
room's row, which the refresh's FOR NO KEY UPDATE lets through), and never
touches the item's row. A refresh takes its room's row FOR NO KEY UPDATE SKIP
LOCKED: one instance advances a room at a time, the others read what it left.
Ranks come from the room's own sequence (``queue_ranks_<item id>``, made with
the room): dense, handed out without a lock, in arrival order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from ecommerce.repositories._base import _Repository


def rank_sequence(item_id: int) -> str:
    """The name of the room's sequence of ranks (item ids are integers)."""
    return f"queue_ranks_{int(item_id)}"


@dataclass(frozen=True)
class RoomRow:
    """A room, with what its refresh needs of its item."""

    item_id: int
    is_open: bool
    mode: str
    rate_per_s: Decimal | None
    max_admitted: int
    admission_ttl_s: int
    serving: int
    in_flight: int
    line_length: int
    sold_out_after: int | None
    admission_rate: Decimal | None
    opened_at: dt.datetime
    advanced_at: dt.datetime
    refreshed_at: dt.datetime
    drawn_at: dt.datetime | None
    # the item's
    stock: Decimal
    per_user_limit: int | None
    sale_starts_at: dt.datetime | None


@dataclass(frozen=True)
class PlaceRow:
    rank: int
    joined_at: dt.datetime
    admitted_at: dt.datetime | None
    admission_expires_at: dt.datetime | None
    done_at: dt.datetime | None


_ROOM_COLUMNS = """
    r.item_id, r.is_open, r.mode, r.rate_per_s, r.max_admitted, r.admission_ttl_s,
    r.serving, r.in_flight, r.line_length, r.sold_out_after, r.admission_rate,
    r.opened_at, r.advanced_at, r.refreshed_at, r.drawn_at,
    i.stock, i.per_user_limit, i.sale_starts_at
"""
_PLACE_COLUMNS = "rank, joined_at, admitted_at, admission_expires_at, done_at"


class RoomRepository(_Repository):
    # Every open room with its item (a plain read: the fronts a worker caches).
    OPEN_ROOMS = text(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN items i ON i.id = r.item_id"
        " WHERE r.is_open ORDER BY r.item_id"
    )

    def open_rooms(self) -> list[RoomRow]:
        return [RoomRow(*row) for row in self._execute(self.OPEN_ROOMS, {})]

    # One room, whatever its state (a plain read).
    ROOM = text(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN items i ON i.id = r.item_id"
        " WHERE r.item_id = :item_id"
    )

    def get(self, item_id: int) -> RoomRow | None:
        row = self._execute(self.ROOM, {"item_id": item_id}).first()
        return RoomRow(*row) if row is not None else None

    # The room's row for its refresh, if it is open, due and no one else holds it.
    LOCK_DUE = text(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN items i ON i.id = r.item_id"
        " WHERE r.item_id = :item_id AND r.is_open AND r.refreshed_at <= :due"
        " FOR NO KEY UPDATE OF r SKIP LOCKED"
    )

    def lock_if_due(self, item_id: int, due: dt.datetime) -> RoomRow | None:
        row = self._execute(self.LOCK_DUE, {"item_id": item_id, "due": due}).first()
        return RoomRow(*row) if row is not None else None

    # The room's row for an admin's change (waits, within the lock timeout).
    LOCK = text(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN items i ON i.id = r.item_id"
        " WHERE r.item_id = :item_id FOR NO KEY UPDATE OF r"
    )

    def lock(self, item_id: int) -> RoomRow | None:
        row = self._execute(self.LOCK, {"item_id": item_id}).first()
        return RoomRow(*row) if row is not None else None

    INSERT = text(
        "INSERT INTO rooms (item_id, is_open, mode, rate_per_s, max_admitted, admission_ttl_s,"
        " opened_at, advanced_at, refreshed_at)"
        " VALUES (:item_id, :is_open, :mode, :rate_per_s, :max_admitted, :admission_ttl_s,"
        " :now, :now, :now)"
        " ON CONFLICT (item_id) DO NOTHING RETURNING item_id"
    )

    def create(self, item_id: int, options: Mapping[str, Any], now: dt.datetime) -> bool:
        """A new room with its sequence of ranks; False if it already exists.
        The sequence is made again with the room (a leftover of an earlier room
        of a reused item id would start mid-way)."""
        made = self._execute(self.INSERT, {"item_id": item_id, "now": now, **options}).first()
        if made is None:
            return False
        name = rank_sequence(item_id)
        self._execute(text(f"DROP SEQUENCE IF EXISTS {name}"), {})
        self._execute(text(f"CREATE SEQUENCE {name} AS bigint MINVALUE 1"), {})
        return True

    CHANGE = text(
        "UPDATE rooms SET is_open = :is_open, mode = :mode, rate_per_s = :rate_per_s,"
        " max_admitted = :max_admitted, admission_ttl_s = :admission_ttl_s,"
        " opened_at = CASE WHEN :is_open AND NOT is_open THEN :now ELSE opened_at END,"
        " advanced_at = CASE WHEN :is_open AND NOT is_open THEN :now ELSE advanced_at END"
        " WHERE item_id = :item_id"
    )

    def change(self, item_id: int, options: Mapping[str, Any], now: dt.datetime) -> None:
        self._execute(self.CHANGE, {"item_id": item_id, "now": now, **options})

    HAS_PLACES = text("SELECT EXISTS (SELECT 1 FROM queue_places WHERE item_id = :item_id)")

    def has_places(self, item_id: int) -> bool:
        return bool(self._execute(self.HAS_PLACES, {"item_id": item_id}).scalar_one())

    # --- Places ----------------------------------------------------------------

    # The buyer's place, or a new one at the back of the line: one statement,
    # no lock waited for (a rank is drawn only when the buyer has no place yet).
    JOIN = text(
        f"WITH found AS (SELECT {_PLACE_COLUMNS} FROM queue_places"
        "   WHERE item_id = :item_id AND user_id = :user_id),"
        " made AS (INSERT INTO queue_places (item_id, user_id, rank, joined_at)"
        "   SELECT :item_id, :user_id, nextval(CAST(:sequence AS regclass)), :now"
        "   WHERE NOT EXISTS (SELECT 1 FROM found)"
        "     AND EXISTS (SELECT 1 FROM rooms WHERE item_id = :item_id AND is_open)"
        f"   ON CONFLICT (item_id, user_id) DO NOTHING RETURNING {_PLACE_COLUMNS})"
        f" SELECT {_PLACE_COLUMNS} FROM made UNION ALL SELECT {_PLACE_COLUMNS} FROM found"
    )
    PLACE = text(
        f"SELECT {_PLACE_COLUMNS} FROM queue_places WHERE item_id = :item_id AND user_id = :user_id"
    )

    def join(self, item_id: int, user_id: str, now: dt.datetime) -> PlaceRow | None:
        """The buyer's place (None: the room closed meanwhile)."""
        params = {
            "item_id": item_id,
            "user_id": user_id,
            "now": now,
            "sequence": rank_sequence(item_id),
        }
        row = self._execute(self.JOIN, params).first()
        if row is None:  # the same buyer's join committed meanwhile (or the room closed)
            return self.place(item_id, user_id)
        return PlaceRow(*row)

    def place(self, item_id: int, user_id: str) -> PlaceRow | None:
        row = self._execute(self.PLACE, {"item_id": item_id, "user_id": user_id}).first()
        return PlaceRow(*row) if row is not None else None

    LEAVE = text("DELETE FROM queue_places WHERE item_id = :item_id AND user_id = :user_id")

    def leave(self, item_id: int, user_id: str) -> bool:
        return self._execute(self.LEAVE, {"item_id": item_id, "user_id": user_id}).rowcount > 0

    # Admitted places of these (user, item) pairs, done: they no longer count in flight.
    MARK_PAID = text(
        "UPDATE queue_places q SET done_at = :now, outcome = 'paid'"
        " FROM unnest(CAST(:users AS text[]), CAST(:items AS int[])) AS p(user_id, item_id)"
        " WHERE q.item_id = p.item_id AND q.user_id = p.user_id"
        "   AND q.admitted_at IS NOT NULL AND q.done_at IS NULL"
    )

    def mark_paid(self, places: Iterable[tuple[str, int]], now: dt.datetime) -> None:
        pairs = sorted(set(places), key=lambda p: (p[1], p[0]))
        if pairs:
            self._execute(
                self.MARK_PAID,
                {"users": [u for u, _ in pairs], "items": [i for _, i in pairs], "now": now},
            )

    # --- A refresh (the room's row held) -----------------------------------------

    IN_FLIGHT = text(
        "SELECT count(*) FROM queue_places WHERE item_id = :item_id"
        " AND admitted_at IS NOT NULL AND done_at IS NULL AND admission_expires_at > :now"
    )

    def in_flight(self, item_id: int, now: dt.datetime) -> int:
        return self._execute(self.IN_FLIGHT, {"item_id": item_id, "now": now}).scalar_one()

    # The places a draw deals again: those that joined before the sale opened.
    UNDRAWN = text(
        "SELECT user_id, rank FROM queue_places WHERE item_id = :item_id"
        " AND admitted_at IS NULL AND (CAST(:before AS timestamptz) IS NULL"
        "   OR joined_at < :before)"
    )

    def undrawn(self, item_id: int, before: dt.datetime | None) -> list[tuple[str, int]]:
        rows = self._execute(self.UNDRAWN, {"item_id": item_id, "before": before})
        return [(user, rank) for user, rank in rows]

    REDEAL = text(
        "UPDATE queue_places q SET rank = d.rank"
        " FROM unnest(CAST(:users AS text[]), CAST(:ranks AS bigint[])) AS d(user_id, rank)"
        " WHERE q.item_id = :item_id AND q.user_id = d.user_id"
    )
    RECORD_DRAW = text(
        "UPDATE rooms SET draw_seed = :seed, drawn_at = :now WHERE item_id = :item_id"
    )

    def record_draw(
        self, item_id: int, ranks: Mapping[str, int], seed: bytes, now: dt.datetime
    ) -> None:
        """The drawn ranks and the draw's seed. The ranks' uniqueness is checked
        at the commit (the constraint is deferred here): midway through the
        statement two places may hold one rank."""
        if ranks:
            self._execute(text("SET CONSTRAINTS uq_queue_places_item_id DEFERRED"), {})
            users = sorted(ranks)
            self._execute(
                self.REDEAL,
                {"item_id": item_id, "users": users, "ranks": [ranks[u] for u in users]},
            )
        self._execute(self.RECORD_DRAW, {"item_id": item_id, "seed": seed, "now": now})

    # The next places in line (lowest ranks first), admitted.
    ADMIT = text(
        "UPDATE queue_places SET admitted_at = :now, admission_expires_at = :expires"
        " WHERE item_id = :item_id AND rank IN (SELECT rank FROM queue_places"
        "   WHERE item_id = :item_id AND admitted_at IS NULL ORDER BY rank LIMIT :count)"
        " RETURNING rank"
    )

    def admit(self, item_id: int, count: int, now: dt.datetime, expires: dt.datetime) -> list[int]:
        if count <= 0:
            return []
        rows = self._execute(
            self.ADMIT, {"item_id": item_id, "count": count, "now": now, "expires": expires}
        )
        return [rank for (rank,) in rows]

    # The line behind the admitted: its length, the rank of the first place the
    # stock cannot reach (the ``servable``-th waiting place, from 0), the last rank.
    LINE = text(
        "SELECT (SELECT count(*) FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at IS NULL),"
        "       (SELECT rank FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at IS NULL ORDER BY rank OFFSET :servable LIMIT 1),"
        "       (SELECT max(rank) FROM queue_places WHERE item_id = :item_id),"
        "       (SELECT count(*) FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at > :since)"
    )

    def line(
        self, item_id: int, servable: int, since: dt.datetime
    ) -> tuple[int, int | None, int | None, int]:
        """(waiting places, first rank past the stock, last rank, admissions since)."""
        row = self._execute(
            self.LINE, {"item_id": item_id, "servable": servable, "since": since}
        ).one()
        return row[0], row[1], row[2], row[3]

    SAVE_FRONT = text(
        "UPDATE rooms SET serving = :serving, in_flight = :in_flight,"
        " line_length = :line_length, sold_out_after = :sold_out_after,"
        " admission_rate = :admission_rate, advanced_at = :advanced_at, refreshed_at = :now"
        " WHERE item_id = :item_id"
    )

    def save_front(self, item_id: int, now: dt.datetime, **front: Any) -> None:
        self._execute(self.SAVE_FRONT, {"item_id": item_id, "now": now, **front})
