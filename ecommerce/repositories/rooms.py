"""Waiting rooms and the places in their lines.

Locking: joining takes no lock a refresh holds (an INSERT ... ON CONFLICT DO
NOTHING into ``queue_places``; its foreign key takes FOR KEY SHARE on the
room's row, which the refresh's FOR NO KEY UPDATE lets through), and never
touches the item's row. A refresh takes its room's row FOR NO KEY UPDATE SKIP
LOCKED: one instance advances a room at a time, the others read what it left.
A place's arrival number ``seq`` is the column's default, ``nextval`` of the
one sequence ``queue_arrivals`` (migration 0009): handed out without a lock, in
arrival order, global across rooms (not dense per room). Nothing here makes a
schema object.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from ecommerce.repositories._base import _Repository


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
    serving_seq: int
    in_flight: int
    line_length: int
    sold_out_after: int | None
    sold_out_seq: int | None
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
    seq: int
    joined_at: dt.datetime
    admitted_at: dt.datetime | None
    admission_expires_at: dt.datetime | None
    done_at: dt.datetime | None


_ROOM_COLUMNS = """
    r.item_id, r.is_open, r.mode, r.rate_per_s, r.max_admitted, r.admission_ttl_s,
    r.serving, r.serving_seq, r.in_flight, r.line_length, r.sold_out_after, r.sold_out_seq,
    r.admission_rate,
    r.opened_at, r.advanced_at, r.refreshed_at, r.drawn_at,
    i.stock, i.per_user_limit, i.sale_starts_at
"""
_PLACE_COLUMNS = "seq, joined_at, admitted_at, admission_expires_at, done_at"


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

    # The rooms of these items, open or closed (a plain read: the console's snapshot).
    ROOMS_OF = text(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN items i ON i.id = r.item_id"
        " WHERE r.item_id = ANY(CAST(:items AS int[])) ORDER BY r.item_id"
    )

    def rooms_of(self, item_ids: Iterable[int]) -> dict[int, RoomRow]:
        """{item id: its room} for those of ``item_ids`` that have one."""
        items = sorted(set(item_ids))
        if not items:
            return {}
        rows = self._execute(self.ROOMS_OF, {"items": items})
        return {row.item_id: row for row in (RoomRow(*r) for r in rows)}

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
        """A new room (a row, nothing more); False if it already exists."""
        made = self._execute(self.INSERT, {"item_id": item_id, "now": now, **options}).first()
        return made is not None

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

    PLACE = text(
        f"SELECT {_PLACE_COLUMNS} FROM queue_places WHERE item_id = :item_id AND user_id = :user_id"
    )
    # Each buyer's place, or a new one at the back of the line, for a batch of
    # buyers in one statement. No lock a refresh, an admin or a pay holds is
    # waited for; only another join of the same buyer, not yet committed (ON
    # CONFLICT waits for it; two batches that cross are a deadlock PostgreSQL
    # breaks, and the transaction is retried). A new place's arrival number
    # is the column's default, drawn only for a buyer with no place yet, in the
    # order the buyers are given. With each, how many of the room's places
    # committed with a number between ``after`` (the last one the caller's view
    # of the line holds) and the place's own: the places ahead the view misses.
    # The counts see the statement's snapshot, which holds none of the places
    # it inserts (join_many adds those).
    JOIN_MANY = text(
        "WITH wanted AS (SELECT * FROM unnest(CAST(:items AS int[]), CAST(:users AS text[]),"
        "   CAST(:afters AS bigint[])) WITH ORDINALITY AS w(item_id, user_id, after, n)),"
        f" found AS (SELECT q.item_id, q.user_id, {_PLACE_COLUMNS} FROM queue_places q"
        "   JOIN wanted w ON q.item_id = w.item_id AND q.user_id = w.user_id),"
        " made AS (INSERT INTO queue_places (item_id, user_id, joined_at)"
        "   SELECT w.item_id, w.user_id, :now FROM wanted w"
        "   WHERE NOT EXISTS (SELECT 1 FROM found f"
        "       WHERE f.item_id = w.item_id AND f.user_id = w.user_id)"
        "     AND EXISTS (SELECT 1 FROM rooms r WHERE r.item_id = w.item_id AND r.is_open)"
        "   ORDER BY w.n"
        "   ON CONFLICT (item_id, user_id) DO NOTHING"
        f"   RETURNING item_id, user_id, {_PLACE_COLUMNS}),"
        " place AS (SELECT *, true AS new FROM made UNION ALL SELECT *, false FROM found)"
        f" SELECT w.n, p.new, {', '.join('p.' + c for c in _PLACE_COLUMNS.split(', '))},"
        "   (SELECT count(*) FROM queue_places o WHERE o.item_id = p.item_id"
        "     AND o.seq > w.after AND o.seq < p.seq)"
        " FROM wanted w JOIN place p ON p.item_id = w.item_id AND p.user_id = w.user_id"
    )

    def join_many(
        self, joins: Sequence[tuple[int, str, int]], now: dt.datetime
    ) -> list[tuple[PlaceRow, int | None] | None]:
        """Each (item, user, after) of ``joins`` (distinct (item, user) pairs)
        joined in one statement: the buyer's place, a new one numbered in the
        order given, and the places of its room that committed, or that this
        statement made, with a number between its ``after`` and its own; None
        where the room is not open."""
        if not joins:
            return []
        rows = self._execute(
            self.JOIN_MANY,
            {
                "items": [item for item, _, _ in joins],
                "users": [user for _, user, _ in joins],
                "afters": [after for _, _, after in joins],
                "now": now,
            },
        ).all()
        by_n = {row[0] - 1: row for row in rows}
        made = sorted((joins[n][0], row[2]) for n, row in by_n.items() if row[1])
        answers: list[tuple[PlaceRow, int | None] | None] = []
        for n, (item_id, user_id, after) in enumerate(joins):
            row = by_n.get(n)
            if row is None:  # the same buyer's join committed meanwhile (or the room closed)
                place = self.place(item_id, user_id)
                answers.append((place, None) if place is not None else None)
                continue
            seq = row[2]
            made_between = bisect_left(made, (item_id, seq)) - bisect_right(made, (item_id, after))
            answers.append((PlaceRow(*row[2:-1]), row[-1] + max(0, made_between)))
        return answers

    def place(self, item_id: int, user_id: str) -> PlaceRow | None:
        row = self._execute(self.PLACE, {"item_id": item_id, "user_id": user_id}).first()
        return PlaceRow(*row) if row is not None else None

    LEAVE = text("DELETE FROM queue_places WHERE item_id = :item_id AND user_id = :user_id")

    def leave(self, item_id: int, user_id: str) -> bool:
        return self._execute(self.LEAVE, {"item_id": item_id, "user_id": user_id}).rowcount > 0

    # Of these (user, item) pairs, the places whose admission holds at :now
    # (admitted, not done, not lapsed), with their arrival numbers.
    ADMITTED_NOW = text(
        "SELECT q.user_id, q.item_id, q.seq FROM queue_places q"
        " JOIN unnest(CAST(:users AS text[]), CAST(:items AS int[])) AS p(user_id, item_id)"
        "   ON q.item_id = p.item_id AND q.user_id = p.user_id"
        " WHERE q.admitted_at IS NOT NULL AND q.done_at IS NULL"
        "   AND q.admission_expires_at > :now"
    )

    def admitted_now(
        self, pairs: Iterable[tuple[str, int]], now: dt.datetime
    ) -> dict[tuple[str, int], int]:
        """{(user, item): seq} of the places among ``pairs`` admitted at ``now``."""
        wanted = sorted(set(pairs))
        if not wanted:
            return {}
        rows = self._execute(
            self.ADMITTED_NOW,
            {"users": [u for u, _ in wanted], "items": [i for _, i in wanted], "now": now},
        )
        return {(user, item): seq for user, item, seq in rows}

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

    # The arrival numbers of open rooms' places above each room's floor, in
    # order: one statement for every room a worker's view reads again.
    SEQS = text(
        "SELECT q.item_id, q.seq FROM queue_places q"
        " JOIN unnest(CAST(:items AS int[]), CAST(:floors AS bigint[])) AS f(item_id, floor)"
        "   ON q.item_id = f.item_id AND q.seq > f.floor"
        " ORDER BY q.item_id, q.seq"
    )

    def seqs_above(self, floors: Mapping[int, int]) -> dict[int, list[int]]:
        """Each room's arrival numbers above its floor, ascending."""
        found: dict[int, list[int]] = {item: [] for item in floors}
        if floors:
            items = sorted(floors)
            rows = self._execute(self.SEQS, {"items": items, "floors": [floors[i] for i in items]})
            for item, seq in rows:
                found[item].append(seq)
        return found

    # --- A refresh (the room's row held) -----------------------------------------

    # The places in flight and the item's stock, read in one snapshot: a pay
    # takes its units and ends its admission in one transaction, so the two
    # agree (read apart, a pay committing between them would let one more in).
    IN_FLIGHT = text(
        "SELECT (SELECT count(*) FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at IS NOT NULL AND done_at IS NULL"
        "          AND admission_expires_at > :now),"
        "       (SELECT stock FROM items WHERE id = :item_id)"
    )

    def in_flight(self, item_id: int, now: dt.datetime) -> tuple[int, Decimal]:
        """(places admitted, not done, not lapsed; the item's stock now)."""
        row = self._execute(self.IN_FLIGHT, {"item_id": item_id, "now": now}).one()
        return row[0], row[1]

    # The places a draw deals again: those that joined before the sale opened.
    UNDRAWN = text(
        "SELECT user_id, seq FROM queue_places WHERE item_id = :item_id"
        " AND admitted_at IS NULL AND (CAST(:before AS timestamptz) IS NULL"
        "   OR joined_at < :before)"
    )

    def undrawn(self, item_id: int, before: dt.datetime | None) -> list[tuple[str, int]]:
        rows = self._execute(self.UNDRAWN, {"item_id": item_id, "before": before})
        return [(user, seq) for user, seq in rows]

    REDEAL = text(
        "UPDATE queue_places q SET seq = d.seq"
        " FROM unnest(CAST(:users AS text[]), CAST(:seqs AS bigint[])) AS d(user_id, seq)"
        " WHERE q.item_id = :item_id AND q.user_id = d.user_id"
    )
    RECORD_DRAW = text(
        "UPDATE rooms SET draw_seed = :seed, drawn_at = :now WHERE item_id = :item_id"
    )

    def record_draw(
        self, item_id: int, seqs: Mapping[str, int], seed: bytes, now: dt.datetime
    ) -> None:
        """The drawn arrival numbers (the same numbers, dealt to other places)
        and the draw's seed. Their uniqueness is checked at the commit (the
        constraint is deferred here): midway through the statement two places
        may hold one number."""
        if seqs:
            self._execute(text("SET CONSTRAINTS uq_queue_places_item_id DEFERRED"), {})
            users = sorted(seqs)
            self._execute(
                self.REDEAL,
                {"item_id": item_id, "users": users, "seqs": [seqs[u] for u in users]},
            )
        self._execute(self.RECORD_DRAW, {"item_id": item_id, "seed": seed, "now": now})

    # The next places in line (lowest arrival numbers first), admitted.
    ADMIT = text(
        "UPDATE queue_places SET admitted_at = :now, admission_expires_at = :expires"
        " WHERE item_id = :item_id AND seq IN (SELECT seq FROM queue_places"
        "   WHERE item_id = :item_id AND admitted_at IS NULL ORDER BY seq LIMIT :count)"
        " RETURNING seq"
    )

    def admit(self, item_id: int, count: int, now: dt.datetime, expires: dt.datetime) -> list[int]:
        if count <= 0:
            return []
        rows = self._execute(
            self.ADMIT, {"item_id": item_id, "count": count, "now": now, "expires": expires}
        )
        return [seq for (seq,) in rows]

    # The line behind the admitted: its length, the arrival number of the first
    # place the stock cannot reach (the ``servable``-th waiting place, from 0),
    # the admissions since ``since``.
    LINE = text(
        "WITH recent AS (SELECT admitted_at FROM queue_places WHERE item_id = :item_id"
        "   AND admitted_at > :since),"
        " first AS (SELECT min(admitted_at) AS at FROM recent)"
        " SELECT (SELECT count(*) FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at IS NULL),"
        "       (SELECT seq FROM queue_places WHERE item_id = :item_id"
        "          AND admitted_at IS NULL ORDER BY seq OFFSET :servable LIMIT 1),"
        "       (SELECT count(*) FROM recent, first WHERE recent.admitted_at > first.at),"
        "       (SELECT at FROM first)"
    )

    def line(
        self, item_id: int, servable: int, since: dt.datetime
    ) -> tuple[int, int | None, int, dt.datetime | None]:
        """(waiting places, first arrival number past the stock, admissions
        since ``since`` after the first of them, the first of them)."""
        row = self._execute(
            self.LINE, {"item_id": item_id, "servable": servable, "since": since}
        ).one()
        return row[0], row[1], row[2], row[3]

    SAVE_FRONT = text(
        "UPDATE rooms SET serving = :serving, serving_seq = :serving_seq,"
        " in_flight = :in_flight, line_length = :line_length,"
        " sold_out_after = :sold_out_after, sold_out_seq = :sold_out_seq,"
        " admission_rate = :admission_rate, advanced_at = :advanced_at, refreshed_at = :now"
        " WHERE item_id = :item_id"
    )

    def save_front(self, item_id: int, now: dt.datetime, **front: Any) -> None:
        self._execute(self.SAVE_FRONT, {"item_id": item_id, "now": now, **front})
