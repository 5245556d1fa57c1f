"""Items: the catalogue, the stock (the pay's hot rows), the stock ledger's
arrivals and returns, and each item's account.

Item rows are locked FOR NO KEY UPDATE (``key_share=True``), in ascending id
order (the ORDER BY sits below the row-locking step, so rows are locked in that
order). NO KEY UPDATE does not conflict with the FOR KEY SHARE lock a
foreign-key check takes, so adding to a cart never waits behind a checkout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, any_, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from ecommerce.models import (
    ORDER_STATUS_PAID,
    ORDER_STATUS_PENDING,
    ORDER_STATUS_REFUNDED,
    Item,
    StockMovement,
)
from ecommerce.repositories._base import _Repository, sql_string

#: An item as ItemRow holds it.
_ITEM_COLUMNS = (
    Item.id,
    Item.name,
    Item.price,
    Item.stock,
    Item.per_user_limit,
    Item.sale_starts_at,
    Item.sale_ends_at,
)
_ITEM_IDS = bindparam("item_ids", type_=ARRAY(Integer))

_PENDING = sql_string(ORDER_STATUS_PENDING)
_PAID = sql_string(ORDER_STATUS_PAID)
_REFUNDED = sql_string(ORDER_STATUS_REFUNDED)


@dataclass(frozen=True)
class ItemRow:
    """An item's columns as one statement read them (locked or not)."""

    id: int
    name: str
    price: Decimal
    stock: Decimal
    per_user_limit: int | None = None
    sale_starts_at: dt.datetime | None = None
    sale_ends_at: dt.datetime | None = None


@dataclass(frozen=True)
class ItemAccountRow:
    """An item's stock, its units in orders by status, what the paid ones brought
    in, its recent sales and its sale rules (ITEM_ACCOUNTS)."""

    id: int
    name: str
    price: Decimal
    available: Decimal
    reserved: int
    sold: int
    refunded: int
    revenue: Decimal
    orders: int
    recent: int  # units paid or reserved in the last 10 s
    per_user_limit: int | None
    sale_starts_at: dt.datetime | None
    sale_ends_at: dt.datetime | None


class ItemRepository(_Repository):
    def get(self, item_id: int) -> ItemRow | None:
        rows = self.read([item_id])
        return rows[0] if rows else None

    ALL_ITEMS = select(*_ITEM_COLUMNS).order_by(Item.id)

    def list(self) -> list[ItemRow]:
        return [ItemRow(*row) for row in self._execute(self.ALL_ITEMS, {})]

    def find_by_name(self, name: str) -> ItemRow | None:
        row = self._execute(select(*_ITEM_COLUMNS).where(Item.name == name).limit(1), {}).first()
        return ItemRow(*row) if row else None

    def add(
        self, name: str, price: Decimal, stock: Decimal, rules: Mapping[str, Any] | None = None
    ) -> ItemRow:
        """A new item (``rules``: per_user_limit, sale_starts_at, sale_ends_at);
        its opening stock is recorded in the stock ledger."""
        values = {"name": name, "price": price, "stock": stock, **(rules or {})}
        row = self._execute(insert(Item).values(values).returning(*_ITEM_COLUMNS), {}).one()
        item = ItemRow(*row)
        if stock > 0:
            self._record_arrival(item.id, stock, "initial")
        return item

    def lock_one(self, item_id: int) -> ItemRow | None:
        """One item row, FOR NO KEY UPDATE (an admin change: read, check, write)."""
        rows = self.lock([item_id])
        return rows[0] if rows else None

    def change(self, item_id: int, values: Mapping[str, Any]) -> ItemRow:
        """Write some of name, price, per_user_limit, sale_starts_at, sale_ends_at."""
        stmt = update(Item).where(Item.id == item_id).values(dict(values))
        return ItemRow(*self._execute(stmt.returning(*_ITEM_COLUMNS), {}).one())

    def account(self, item_id: int, now: dt.datetime) -> ItemAccountRow | None:
        found = self.accounts(1, now, item_id)
        return found[0] if found else None

    #: Items' accounts (GET /admin/items/<id>/sales, the console): stock, units in
    #: orders by status, what the paid ones brought in, units sold or reserved in the
    #: 10 s before :now, and the sale rules, in one statement (one snapshot). :item_id NULL:
    #: every item, up to :limit.
    ITEM_ACCOUNTS = text(
        f"""
    SELECT i.id, i.name, i.price, i.stock AS available,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = {_PENDING}), 0) AS reserved,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = {_PAID}), 0) AS sold,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = {_REFUNDED}), 0) AS refunded,
        coalesce(sum(l.quantity * l.unit_price) FILTER (WHERE o.status = {_PAID}), 0) AS revenue,
        count(DISTINCT o.id) FILTER (WHERE o.status IN ({_PENDING}, {_PAID})) AS orders,
        coalesce(sum(l.quantity) FILTER (WHERE o.status IN ({_PAID}, {_PENDING})
                 AND o.created_at > CAST(:now AS timestamptz) - interval '10 seconds'), 0)
                 AS recent,
        i.per_user_limit, i.sale_starts_at, i.sale_ends_at
    FROM items i
    LEFT JOIN order_lines l ON l.item_id = i.id
    LEFT JOIN orders o ON o.id = l.order_id
    WHERE CAST(:item_id AS integer) IS NULL OR i.id = :item_id
    GROUP BY i.id
    ORDER BY i.id
    LIMIT :limit
    """
    )

    def accounts(
        self, limit: int, now: dt.datetime, item_id: int | None = None
    ) -> list[ItemAccountRow]:
        """Every item's account at ``now`` (ITEM_ACCOUNTS), in id order; or just
        ``item_id``'s."""
        rows = self._execute(self.ITEM_ACCOUNTS, {"item_id": item_id, "limit": limit, "now": now})
        return [ItemAccountRow(*row) for row in rows]

    def restock(self, item_id: int, quantity: Decimal) -> Decimal | None:
        """Add units to stock and to the ledger; returns the new stock (None: no such item)."""
        new_stock = self._execute(
            update(Item)
            .where(Item.id == item_id)
            .values(stock=Item.stock + quantity)
            .returning(Item.stock),
            {},
        ).scalar_one_or_none()
        if new_stock is not None:
            self._record_arrival(item_id, quantity, "restock")
        return new_stock

    def _record_arrival(self, item_id: int, quantity: Decimal, reason: str) -> None:
        self._execute(
            insert(StockMovement).values(item_id=item_id, quantity=quantity, reason=reason), {}
        )

    #: The design note's locking read: the pay's item rows, ascending id, FOR NO KEY UPDATE.
    LOCK_ITEMS = (
        select(*_ITEM_COLUMNS)
        .where(Item.id == any_(_ITEM_IDS))
        .order_by(Item.id)
        .with_for_update(key_share=True)
    )

    def lock(self, item_ids: Iterable[int]) -> list[ItemRow]:
        """SELECT ... ORDER BY id FOR NO KEY UPDATE: the pay's row locks, in id order."""
        rows = self._execute(self.LOCK_ITEMS, {"item_ids": sorted(set(item_ids))})
        return [ItemRow(*row) for row in rows]

    READ_ITEMS = select(*_ITEM_COLUMNS).where(Item.id == any_(_ITEM_IDS)).order_by(Item.id)

    def read(self, item_ids: Iterable[int]) -> list[ItemRow]:
        """The same columns as :meth:`lock`, without a lock (quotes, error messages)."""
        rows = self._execute(self.READ_ITEMS, {"item_ids": sorted(set(item_ids))})
        return [ItemRow(*row) for row in rows]

    #: An order's units back into stock, and into the ledger as returns of that order.
    RETURN_STOCK = text(
        """
    WITH back AS (
        UPDATE items SET stock = items.stock + r.quantity
        FROM unnest(CAST(:item_ids AS integer[]), CAST(:quantities AS integer[]))
             AS r (id, quantity)
        WHERE items.id = r.id
        RETURNING items.id, r.quantity
    )
    INSERT INTO stock_movements (item_id, quantity, reason, order_id)
    SELECT id, quantity, :reason, :order_id FROM back
    """
    ).bindparams(
        bindparam("item_ids", type_=ARRAY(Integer)),
        bindparam("quantities", type_=ARRAY(Integer)),
    )

    def give_back(self, order_id: int, quantities: Mapping[int, int], reason: str) -> None:
        """Return an order's units to stock (rows already locked) and record each
        line in the ledger as ``reason`` ('release' or 'refund') of that order."""
        ids = sorted(quantities)
        self._execute(
            self.RETURN_STOCK,
            {
                "item_ids": ids,
                "quantities": [quantities[i] for i in ids],
                "order_id": order_id,
                "reason": reason,
            },
        )
