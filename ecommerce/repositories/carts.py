"""Carts: a user's cart lines with their items, adding to them (one add or a
combined batch), and the pay's lock of the cart.

Cart rows are locked FOR UPDATE before item rows, always (see docs/DESIGN.md);
locking a cart here reads its items without locking them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Text, any_, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Executable

from ecommerce.models import CartLine, Item
from ecommerce.repositories._base import _Repository

#: What a cart line carries of its item, after its quantity (CartLineRow).
_LINE_ITEM_COLUMNS = (
    Item.name,
    CartLine.quantity,
    Item.price,
    Item.stock,
    Item.per_user_limit,
    Item.sale_starts_at,
    Item.sale_ends_at,
)


@dataclass(frozen=True)
class CartLineRow:
    """A cart line with its item's name, current price, stock and sale rules."""

    item_id: int
    name: str
    quantity: int
    price: Decimal
    stock: Decimal
    per_user_limit: int | None = None
    sale_starts_at: dt.datetime | None = None
    sale_ends_at: dt.datetime | None = None


@dataclass(frozen=True)
class AddedLine:
    """A cart line right after an add: its new quantity, and its item's name and stock."""

    quantity: int
    name: str
    stock: Decimal
    per_user_limit: int | None = None


class CartRepository(_Repository):
    #: The cart lines of users, each with its item's name, price, current stock
    #: and sale rules, in (user_id, item_id) order: a plain read.
    CARTS_OF_USERS = (
        select(CartLine.user_id, CartLine.item_id, *_LINE_ITEM_COLUMNS)
        .join(Item, Item.id == CartLine.item_id)
        .where(CartLine.user_id == any_(bindparam("user_ids", type_=ARRAY(Text))))
        .order_by(CartLine.user_id, CartLine.item_id)
    )

    def lines_many(self, user_ids: Iterable[str]) -> dict[str, list[CartLineRow]]:
        """Each user's cart lines, in one statement, without a lock; a user with
        an empty cart is absent from the answer."""
        return self._carts(self.CARTS_OF_USERS, user_ids)

    def lines(self, user_id: str) -> list[CartLineRow]:
        return self.lines_many([user_id]).get(user_id, [])

    #: The same, locked FOR UPDATE OF carts (items are only read here), in
    #: (user_id, item_id) order so two batches that share a user lock its rows
    #: in the same order.
    LOCK_CARTS_FOR_PAY = CARTS_OF_USERS.with_for_update(of=CartLine)

    def lock_for_pay(self, user_ids: Iterable[str]) -> dict[str, list[CartLineRow]]:
        """:meth:`lines_many`, each line locked for the pay; a user with an empty
        cart is absent from the answer."""
        return self._carts(self.LOCK_CARTS_FOR_PAY, user_ids)

    #: The pay of a batch of several buyers: the lines each buyer's cart holds
    #: (a plain read), each locked unless another transaction holds it (SKIP
    #: LOCKED: one buyer's held row never makes the batch wait). A locked line
    #: carries its current quantity (a row changed since the read is locked in
    #: its new version); ``locked`` is false for a line that was held (or was
    #: gone by the time it was reached).
    LOCK_CARTS_FOR_PAY_SKIPPING_HELD = text(
        """
    WITH locked AS MATERIALIZED (
        SELECT user_id, item_id, quantity FROM carts
        WHERE user_id = ANY(:user_ids)
        ORDER BY user_id, item_id
        FOR UPDATE SKIP LOCKED
    )
    SELECT c.user_id, c.item_id, i.name, coalesce(l.quantity, c.quantity) AS quantity,
           i.price, i.stock, i.per_user_limit, i.sale_starts_at, i.sale_ends_at,
           l.item_id IS NOT NULL AS locked
    FROM carts c JOIN items i ON i.id = c.item_id
    LEFT JOIN locked l ON l.user_id = c.user_id AND l.item_id = c.item_id
    WHERE c.user_id = ANY(:user_ids)
    ORDER BY c.user_id, c.item_id
    """
    ).bindparams(bindparam("user_ids", type_=ARRAY(Text)))

    def lock_for_pay_skipping_held(
        self, user_ids: Iterable[str]
    ) -> tuple[dict[str, list[CartLineRow]], set[str]]:
        """:meth:`lock_for_pay` without waiting: the carts whose every line is now
        locked, and the users one of whose lines another transaction holds
        (their lines are left out: their pay must wait, alone)."""
        rows = self._execute(
            self.LOCK_CARTS_FOR_PAY_SKIPPING_HELD, {"user_ids": sorted(set(user_ids))}
        )
        carts: dict[str, list[CartLineRow]] = {}
        held: set[str] = set()
        for user_id, *line, locked in rows:
            carts.setdefault(user_id, []).append(CartLineRow(*line))
            if not locked:
                held.add(user_id)
        for user_id in held:
            del carts[user_id]
        return carts, held

    def _carts(
        self, statement: Executable, user_ids: Iterable[str]
    ) -> dict[str, list[CartLineRow]]:
        rows = self._execute(statement, {"user_ids": sorted(set(user_ids))})
        carts: dict[str, list[CartLineRow]] = {}
        for user_id, *line in rows:
            carts.setdefault(user_id, []).append(CartLineRow(*line))
        return carts

    #: Adds to cart lines (creating them), one increment per (user, item) in
    #: ascending order (so two batches lock shared rows in the same order). The
    #: upsert locks each row, so concurrent adds to one line queue and each sees
    #: the quantity the previous one committed; it returns the new quantity with
    #: the item's name, stock and limit (a plain read, for the early check). An
    #: add of an item that does not exist is left out (no row comes back for it).
    ADD_TO_CART_LINES = text(
        """
    INSERT INTO carts (user_id, item_id, quantity)
    SELECT a.user_id, a.item_id, a.quantity
    FROM unnest(CAST(:users AS text[]), CAST(:items AS integer[]),
                CAST(:quantities AS integer[])) AS a (user_id, item_id, quantity)
    WHERE EXISTS (SELECT 1 FROM items WHERE items.id = a.item_id)
    ORDER BY a.user_id, a.item_id
    ON CONFLICT (user_id, item_id) DO UPDATE SET quantity = carts.quantity + excluded.quantity
    RETURNING carts.user_id, carts.item_id, carts.quantity,
        (SELECT name FROM items WHERE items.id = carts.item_id) AS name,
        (SELECT stock FROM items WHERE items.id = carts.item_id) AS stock,
        (SELECT per_user_limit FROM items WHERE items.id = carts.item_id) AS per_user_limit
    """
    )

    def add(self, adds: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], AddedLine]:
        """Add units to (user, item) lines in one statement, locking each line;
        ``adds`` gives the units to add to each. A line whose item does not
        exist is absent from the answer (and nothing is written for it)."""
        pairs = sorted(adds)
        rows = self._execute(
            self.ADD_TO_CART_LINES,
            {
                "users": [user for user, _ in pairs],
                "items": [item for _, item in pairs],
                "quantities": [adds[pair] for pair in pairs],
            },
        )
        return {(row.user_id, row.item_id): AddedLine(*row[2:]) for row in rows}

    #: Combined adds: the lines of refused adds taken back out (rows already locked
    #: by ADD_TO_CART_LINES): each (user, item) set to its quantity, a line at 0 deleted.
    SET_CART_QUANTITIES = text(
        """
    WITH wanted AS (
        SELECT * FROM unnest(CAST(:users AS text[]), CAST(:items AS integer[]),
                             CAST(:quantities AS integer[])) AS w (user_id, item_id, quantity)
    ), gone AS (
        DELETE FROM carts USING wanted
        WHERE carts.user_id = wanted.user_id AND carts.item_id = wanted.item_id
          AND wanted.quantity = 0
    )
    UPDATE carts SET quantity = wanted.quantity FROM wanted
    WHERE carts.user_id = wanted.user_id AND carts.item_id = wanted.item_id
      AND wanted.quantity > 0
    """
    )

    def set_quantities(self, quantities: Mapping[tuple[str, int], int]) -> None:
        """Set locked lines to these quantities; a line set to 0 is deleted."""
        pairs = sorted(quantities)
        self._execute(
            self.SET_CART_QUANTITIES,
            {
                "users": [user for user, _ in pairs],
                "items": [item for _, item in pairs],
                "quantities": [quantities[pair] for pair in pairs],
            },
        )

    def remove(self, user_id: str, item_id: int) -> bool:
        result = self._execute(
            delete(CartLine)
            .where(CartLine.user_id == user_id, CartLine.item_id == item_id)
            .returning(CartLine.item_id),
            {},
        )
        return result.first() is not None
