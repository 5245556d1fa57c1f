"""Repositories: all SQL lives here. Each takes a session and never commits;
the service that calls it owns the transaction.

What they return: every read gives frozen dataclasses defined below (``ItemRow``
for an item, ``CartLineRow`` for a cart line with its item, ``OrderRecord`` with
its ``OrderLineRecord`` lines, ``StoredResult`` for an idempotency key), never
ORM objects or raw rows, so nothing a service holds can lazy-load or change
behind its back. Writes return the few values the caller needs (an id, a bool).

Locking conventions (see docs/DESIGN.md):
* cart rows are locked FOR UPDATE before item rows, always;
* item rows are locked FOR NO KEY UPDATE (``key_share=True``), in ascending id
  order (the ORDER BY sits below the row-locking step, so rows are locked in
  that order). NO KEY UPDATE does not conflict with the FOR KEY SHARE lock a
  foreign-key check takes, so adding to a cart never waits behind a checkout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Integer,
    Numeric,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from ecommerce.db import FOREIGN_KEY_VIOLATION, sqlstate
from ecommerce.models import (
    CHARGE_INSTANT,
    CHARGE_OPEN,
    STATUSES_HOLDING_STOCK,
    CartLine,
    ConsoleLink,
    IdempotencyKey,
    Item,
    Order,
    OrderLine,
    Payment,
    Refund,
    StockMovement,
)

# --- The pay's statements ------------------------------------------------------
# Built once (SQLAlchemy caches their compiled form). The flash-sale simulator
# compiles these same objects into its pgbench script, so the database ceiling it
# measures is for exactly the SQL the shop sends.

_ITEM_IDS = bindparam("item_ids", type_=ARRAY(Integer))

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

#: A user's cart with each line's item name, price and current stock.
CART_LINES = (
    select(CartLine.item_id, *_LINE_ITEM_COLUMNS)
    .join(Item, Item.id == CartLine.item_id)
    .where(CartLine.user_id == bindparam("user_id"))
    .order_by(CartLine.item_id)
)

#: Add to a cart line (creating it): the upsert locks the cart row, so concurrent
#: adds to one line queue and each sees the quantity the previous one committed.
#: It also returns the item's name and stock (a plain read, for the early check),
#: so the add needs no separate item lookup; a missing item fails its foreign key.
ADD_TO_CART_LINE = (
    pg_insert(CartLine)
    .values(
        user_id=bindparam("user_id"),
        item_id=bindparam("item_id"),
        quantity=bindparam("quantity"),
    )
    .on_conflict_do_update(
        index_elements=[CartLine.user_id, CartLine.item_id],
        set_={"quantity": CartLine.quantity + pg_insert(CartLine).excluded.quantity},
    )
    .returning(
        CartLine.quantity,
        # SQLAlchemy does not correlate subqueries inside RETURNING, so spelled out:
        literal_column("(SELECT name FROM items WHERE items.id = carts.item_id)", Text),
        literal_column("(SELECT stock FROM items WHERE items.id = carts.item_id)", Numeric(10, 2)),
        literal_column(
            "(SELECT per_user_limit FROM items WHERE items.id = carts.item_id)", Integer
        ),
    )
)

#: Combined adds: every add of a batch at once, one increment per (user, item)
#: in ascending order (so two batches lock shared rows in the same order). Like
#: ADD_TO_CART_LINE the upsert locks each row and returns its new quantity with
#: the item's name, stock and limit; an add of an item that does not exist is
#: left out (no row comes back for it) instead of failing the whole statement.
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

#: The user's cart lines, locked FOR UPDATE OF carts (items are only read here).
LOCK_CART_FOR_PAY = (
    select(CartLine.item_id, *_LINE_ITEM_COLUMNS)
    .join(Item, Item.id == CartLine.item_id)
    .where(CartLine.user_id == bindparam("user_id"))
    .order_by(CartLine.item_id)
    .with_for_update(of=CartLine)
)

#: Order, lines, payment, and the paid cart lines gone: one round trip.
WRITE_PAID_ORDER = text(
    """
    WITH new_order AS (
        INSERT INTO orders (user_id, status, total, expires_at, charge)
        VALUES (:user_id, :status, :total, CASE WHEN :status = 'pending'
                THEN now() + make_interval(secs => :reserve_s) END,
                CASE WHEN :status = 'pending' THEN 'open' ELSE 'instant' END)
        RETURNING id, created_at
    ), new_lines AS (
        INSERT INTO order_lines (order_id, item_id, quantity, unit_price)
        SELECT new_order.id, line.item_id, line.quantity, line.unit_price
        FROM new_order, unnest(CAST(:item_ids AS integer[]), CAST(:quantities AS integer[]),
                               CAST(:unit_prices AS numeric[]))
                        AS line (item_id, quantity, unit_price)
    ), new_payment AS (
        INSERT INTO payments (order_id, amount) SELECT id, :amount FROM new_order
        WHERE :status = 'paid'
    ), paid_lines AS (
        DELETE FROM carts
        WHERE user_id = :user_id AND item_id = ANY (CAST(:item_ids AS integer[]))
    )
    SELECT id, created_at FROM new_order
    """
).bindparams(
    bindparam("item_ids", type_=ARRAY(Integer)),
    bindparam("quantities", type_=ARRAY(Integer)),
    bindparam("unit_prices", type_=ARRAY(Numeric(10, 2))),
)

#: Combined pays: the cart lines of every user of a batch, in one statement (a
#: plain read: the sold-out check before any lock).
CARTS_OF_USERS = (
    select(CartLine.user_id, CartLine.item_id, *_LINE_ITEM_COLUMNS)
    .join(Item, Item.id == CartLine.item_id)
    .where(CartLine.user_id == any_(bindparam("user_ids", type_=ARRAY(Text))))
    .order_by(CartLine.user_id, CartLine.item_id)
)

#: The same, locked FOR UPDATE OF carts, in (user_id, item_id) order so two
#: batches that share a user lock its rows in the same order.
LOCK_CARTS_FOR_PAY = CARTS_OF_USERS.with_for_update(of=CartLine)

#: Combined pays: ids for the batch's new orders, and the transaction's time
#: (what orders.created_at will hold), before the item rows are locked.
NEXT_ORDER_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id, now() AS created_at"
    " FROM generate_series(1, :n)"
)

#: Idempotency records with their results, from parallel k_* arrays; also a
#: step of WRITE_PAID_ORDERS.
_SAVE_KEYS_SQL = """
        INSERT INTO idempotency_keys (user_id, key, fingerprint, result, expires_at)
        SELECT k.user_id, k.key, k.fingerprint, k.result, now() + make_interval(secs => :ttl_s)
        FROM unnest(CAST(:k_users AS text[]), CAST(:k_keys AS text[]),
                    CAST(:k_fingerprints AS text[]), CAST(:k_results AS bytea[]))
             AS k (user_id, key, fingerprint, result)
        ON CONFLICT (user_id, key) DO UPDATE
        SET fingerprint = excluded.fingerprint, result = excluded.result,
            expires_at = excluded.expires_at, created_at = now()"""

#: Combined pays: every winner's order, lines, payment, the paid cart lines gone,
#: the idempotency records, and one decrement per item, in one statement. Arrays
#: are parallel: per order (o_*), per order line (l_*), per key (k_*), per item (s_*).
WRITE_PAID_ORDERS = text(
    f"""
    WITH new_orders AS (
        INSERT INTO orders (id, user_id, status, total, created_at, expires_at, charge)
        SELECT o.id, o.user_id, :status, o.total, now(), CASE WHEN :status = 'pending'
               THEN now() + make_interval(secs => :reserve_s) END,
               CASE WHEN :status = 'pending' THEN 'open' ELSE 'instant' END
        FROM unnest(CAST(:o_ids AS bigint[]), CAST(:o_users AS text[]),
                    CAST(:o_totals AS numeric[])) AS o (id, user_id, total)
        RETURNING id
    ), new_lines AS (
        INSERT INTO order_lines (order_id, item_id, quantity, unit_price)
        SELECT l.order_id, l.item_id, l.quantity, l.unit_price
        FROM unnest(CAST(:l_orders AS bigint[]), CAST(:l_items AS integer[]),
                    CAST(:l_quantities AS integer[]), CAST(:l_prices AS numeric[]))
             AS l (order_id, item_id, quantity, unit_price)
        WHERE l.order_id IN (SELECT id FROM new_orders)
    ), new_payments AS (
        INSERT INTO payments (order_id, amount)
        SELECT o.id, o.total
        FROM unnest(CAST(:o_ids AS bigint[]), CAST(:o_totals AS numeric[])) AS o (id, total)
        WHERE o.id IN (SELECT id FROM new_orders) AND :status = 'paid'
    ), paid_lines AS (
        DELETE FROM carts USING unnest(CAST(:l_users AS text[]), CAST(:l_items AS integer[]))
                                AS l (user_id, item_id)
        WHERE carts.user_id = l.user_id AND carts.item_id = l.item_id
    ), new_keys AS ({_SAVE_KEYS_SQL}
    )
    UPDATE items SET stock = items.stock - s.quantity
    FROM unnest(CAST(:s_items AS integer[]), CAST(:s_quantities AS integer[])) AS s (id, quantity)
    WHERE items.id = s.id
    """
)

#: Idempotency records of a batch, each with its result (an expired row with the
#: same key may still be there: it is replaced).
SAVE_KEYS = text(_SAVE_KEYS_SQL)

#: Idempotency keys of a batch: a transaction-scoped advisory lock on each
#: (user, key) pair, tried without waiting; true where it was taken.
TRY_LOCK_KEYS = text(
    """
    SELECT pg_try_advisory_xact_lock(hashtextextended(concat_ws(E'\\x1f', k.user_id, k.key), 0))
    FROM unnest(CAST(:users AS text[]), CAST(:keys AS text[])) WITH ORDINALITY
         AS k (user_id, key, n)
    ORDER BY k.n
    """
)

#: The live records of a batch's keys (after their locks were taken).
FIND_LIVE_KEYS = text(
    """
    SELECT i.user_id, i.key, i.fingerprint, i.result
    FROM idempotency_keys i
    JOIN unnest(CAST(:users AS text[]), CAST(:keys AS text[])) AS k (user_id, key)
      ON i.user_id = k.user_id AND i.key = k.key
    WHERE i.expires_at > now()
    """
)

#: for_update: the design note's locking read, ascending id, FOR NO KEY UPDATE.
LOCK_ITEMS = (
    select(*_ITEM_COLUMNS)
    .where(Item.id == any_(_ITEM_IDS))
    .order_by(Item.id)
    .with_for_update(key_share=True)
)

#: for_update: the decrement of rows LOCK_ITEMS already holds, all lines at once.
DECREMENT_ITEMS = text(
    """
    UPDATE items SET stock = items.stock - wanted.quantity
    FROM unnest(CAST(:item_ids AS integer[]), CAST(:quantities AS integer[]))
         AS wanted (id, quantity)
    WHERE items.id = wanted.id
    """
).bindparams(
    bindparam("item_ids", type_=ARRAY(Integer)),
    bindparam("quantities", type_=ARRAY(Integer)),
)

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

#: atomic: lock, check and write one line in a single statement. The price
#: condition makes sure the order was written at the price the row still has.
TAKE_IF_AVAILABLE = (
    update(Item)
    .where(
        Item.id == bindparam("take_id"),
        Item.stock >= bindparam("take_quantity"),
        Item.price == bindparam("expected_price"),
    )
    .values(stock=Item.stock - bindparam("take_quantity"))
    .returning(*_ITEM_COLUMNS)
)

ALL_ITEMS = select(*_ITEM_COLUMNS).order_by(Item.id)

#: Items' accounts (GET /admin/items/<id>/sales, the console): stock, units in
#: orders by status, what the paid ones brought in, units sold or reserved in the
#: last 10 s, and the sale rules, in one statement (one snapshot). :item_id NULL:
#: every item, up to :limit.
ITEM_ACCOUNTS = text(
    """
    SELECT i.id, i.name, i.price, i.stock AS available,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = 'pending'), 0) AS reserved,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = 'paid'), 0) AS sold,
        coalesce(sum(l.quantity) FILTER (WHERE o.status = 'refunded'), 0) AS refunded,
        coalesce(sum(l.quantity * l.unit_price) FILTER (WHERE o.status = 'paid'), 0) AS revenue,
        count(DISTINCT o.id) FILTER (WHERE o.status IN ('pending', 'paid')) AS orders,
        coalesce(sum(l.quantity) FILTER (WHERE o.status IN ('paid', 'pending')
                 AND o.created_at > now() - interval '10 seconds'), 0) AS recent,
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

#: Per-buyer limits: units of some items some users hold in their orders.
HELD_UNITS = text(
    """
    SELECT o.user_id, l.item_id, CAST(sum(l.quantity) AS integer) AS units
    FROM orders o JOIN order_lines l ON l.order_id = o.id
    WHERE o.user_id = ANY(:users) AND l.item_id = ANY(:items) AND o.status = ANY(:statuses)
    GROUP BY o.user_id, l.item_id
    """
).bindparams(
    bindparam("users", type_=ARRAY(Text)),
    bindparam("items", type_=ARRAY(Integer)),
    bindparam("statuses", type_=ARRAY(Text)),
)

READ_ITEMS = select(*_ITEM_COLUMNS).where(Item.id == any_(_ITEM_IDS)).order_by(Item.id)


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


@dataclass(frozen=True)
class NewOrderLine:
    item_id: int
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderLineRecord:
    item_id: int
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderRecord:
    id: int
    user_id: str
    status: str
    total: Decimal
    created_at: dt.datetime
    expires_at: dt.datetime | None
    lines: list[OrderLineRecord]
    charge: str = CHARGE_INSTANT  # what is known of its charge at the provider


@dataclass(frozen=True)
class NewOrder:
    """A paid order of a combined pay, its id already drawn (NEXT_ORDER_IDS)."""

    id: int
    user_id: str
    total: Decimal
    lines: list[NewOrderLine]


@dataclass(frozen=True)
class NewKeyRecord:
    """An idempotency key to store with its result."""

    user_id: str
    key: str
    fingerprint: str
    result: bytes


@dataclass(frozen=True)
class StoredResult:
    """What an idempotency key recorded: the request's fingerprint and its result."""

    fingerprint: str
    result: bytes


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _execute(self, statement: Executable, params: dict[str, Any]) -> CursorResult[Any]:
        """Run a Core statement on the session's connection, inside its transaction.

        Same SQL and transaction as ``session.execute``, without the ORM's
        per-execution bookkeeping, which costs about half the client CPU of a
        statement on the pay path (see docs/BENCHMARKS.md).
        """
        return self.session.connection().execute(statement, params)


class ItemRepository(_Repository):
    def get(self, item_id: int) -> ItemRow | None:
        rows = self.read([item_id])
        return rows[0] if rows else None

    def list(self) -> list[ItemRow]:
        return [ItemRow(*row) for row in self._execute(ALL_ITEMS, {})]

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

    def account(self, item_id: int) -> ItemAccountRow | None:
        found = self.accounts(1, item_id)
        return found[0] if found else None

    def accounts(self, limit: int, item_id: int | None = None) -> list[ItemAccountRow]:
        """Every item's account (ITEM_ACCOUNTS), in id order; or just ``item_id``'s."""
        rows = self._execute(ITEM_ACCOUNTS, {"item_id": item_id, "limit": limit})
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

    def lock(self, item_ids: Iterable[int]) -> list[ItemRow]:
        """SELECT ... ORDER BY id FOR NO KEY UPDATE: the pay's row locks, in id order."""
        rows = self._execute(LOCK_ITEMS, {"item_ids": sorted(set(item_ids))})
        return [ItemRow(*row) for row in rows]

    def read(self, item_ids: Iterable[int]) -> list[ItemRow]:
        """The same columns as :meth:`lock`, without a lock (quotes, error messages)."""
        rows = self._execute(READ_ITEMS, {"item_ids": sorted(set(item_ids))})
        return [ItemRow(*row) for row in rows]

    def give_back(self, order_id: int, quantities: Mapping[int, int], reason: str) -> None:
        """Return an order's units to stock (rows already locked) and record each
        line in the ledger as ``reason`` ('release' or 'refund') of that order."""
        ids = sorted(quantities)
        self._execute(
            RETURN_STOCK,
            {
                "item_ids": ids,
                "quantities": [quantities[i] for i in ids],
                "order_id": order_id,
                "reason": reason,
            },
        )

    def decrement(self, quantities: Mapping[int, int]) -> None:
        """Subtract quantities from stock in one statement (rows already locked)."""
        ids = sorted(quantities)
        self._execute(
            DECREMENT_ITEMS, {"item_ids": ids, "quantities": [quantities[i] for i in ids]}
        )

    def take_if_available(
        self, item_id: int, quantity: int, expected_price: Decimal
    ) -> ItemRow | None:
        """Conditional decrement: one statement that locks, checks and writes.

        The row as it was locked (its stock before the decrement); None when it
        does not have ``quantity`` in stock (or its price changed).
        """
        row = self._execute(
            TAKE_IF_AVAILABLE,
            {"take_id": item_id, "take_quantity": quantity, "expected_price": expected_price},
        ).first()
        if row is None:
            return None
        return replace(ItemRow(*row), stock=row.stock + quantity)

    def overwrite_stock(self, item_id: int, stock: Decimal) -> None:
        """Write an absolute stock value. Only the unsafe demonstration strategy uses it."""
        self._execute(update(Item).where(Item.id == item_id).values(stock=stock), {})


class CartRepository(_Repository):
    def lines(self, user_id: str) -> list[CartLineRow]:
        return [CartLineRow(*row) for row in self._execute(CART_LINES, {"user_id": user_id})]

    def lock_for_pay(self, user_id: str) -> list[CartLineRow]:
        """Lock the user's cart rows (FOR UPDATE OF carts) and read their items.

        Two pays of the same cart queue here; the second finds the rows deleted
        by the first and sees an empty cart. Item rows are not locked here.
        """
        rows = self._execute(LOCK_CART_FOR_PAY, {"user_id": user_id})
        return [CartLineRow(*row) for row in rows]

    def lock_for_pay_many(self, user_ids: Iterable[str]) -> dict[str, list[CartLineRow]]:
        """:meth:`lock_for_pay` for many users in one statement; a user with an
        empty cart is absent from the answer."""
        return self._carts(LOCK_CARTS_FOR_PAY, user_ids)

    def lines_many(self, user_ids: Iterable[str]) -> dict[str, list[CartLineRow]]:
        """:meth:`lines` for many users in one statement, without a lock."""
        return self._carts(CARTS_OF_USERS, user_ids)

    def _carts(
        self, statement: Executable, user_ids: Iterable[str]
    ) -> dict[str, list[CartLineRow]]:
        rows = self._execute(statement, {"user_ids": sorted(set(user_ids))})
        carts: dict[str, list[CartLineRow]] = {}
        for user_id, *line in rows:
            carts.setdefault(user_id, []).append(CartLineRow(*line))
        return carts

    def add(self, user_id: str, item_id: int, quantity: int) -> AddedLine | None:
        """Add to the line (creating it if needed). None when the item does not exist;
        the transaction is then unusable and must be rolled back."""
        params = {"user_id": user_id, "item_id": item_id, "quantity": quantity}
        try:
            row = self._execute(ADD_TO_CART_LINE, params).one()
        except IntegrityError as error:
            if sqlstate(error) == FOREIGN_KEY_VIOLATION:
                return None
            raise
        return AddedLine(*row)

    def add_many(self, adds: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], AddedLine]:
        """:meth:`add` for many (user, item) lines in one statement, locking each
        line; ``adds`` gives the units to add to each. A line whose item does not
        exist is absent from the answer (and nothing is written for it)."""
        pairs = sorted(adds)
        rows = self._execute(
            ADD_TO_CART_LINES,
            {
                "users": [user for user, _ in pairs],
                "items": [item for _, item in pairs],
                "quantities": [adds[pair] for pair in pairs],
            },
        )
        return {(row.user_id, row.item_id): AddedLine(*row[2:]) for row in rows}

    def set_quantities(self, quantities: Mapping[tuple[str, int], int]) -> None:
        """Set locked lines to these quantities; a line set to 0 is deleted."""
        pairs = sorted(quantities)
        self._execute(
            SET_CART_QUANTITIES,
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


_ORDER_WITH_LINES = (
    select(
        Order.id,
        Order.user_id,
        Order.status,
        Order.total,
        Order.created_at,
        Order.expires_at,
        Order.charge,
        OrderLine.item_id,
        Item.name,
        OrderLine.quantity,
        OrderLine.unit_price,
    )
    .join(OrderLine, OrderLine.order_id == Order.id)
    .join(Item, Item.id == OrderLine.item_id)
)


def _orders_from_rows(rows: Iterable[Any]) -> list[OrderRecord]:
    orders: dict[int, OrderRecord] = {}
    for row in rows:
        order = orders.get(row.id)
        if order is None:
            order = orders[row.id] = OrderRecord(
                row.id,
                row.user_id,
                row.status,
                row.total,
                row.created_at,
                row.expires_at,
                [],
                row.charge,
            )
        order.lines.append(OrderLineRecord(row.item_id, row.name, row.quantity, row.unit_price))
    return list(orders.values())


class OrderRepository(_Repository):
    def held_units(
        self, user_ids: Iterable[str], item_ids: Iterable[int]
    ) -> dict[tuple[str, int], int]:
        """Units of each item each user holds in orders that hold stock:
        {(user_id, item_id): units}, absent when none."""
        rows = self._execute(
            HELD_UNITS,
            {
                "users": sorted(set(user_ids)),
                "items": sorted(set(item_ids)),
                "statuses": list(STATUSES_HOLDING_STOCK),
            },
        )
        return {(user, item): units for user, item, units in rows}

    def write_paid(
        self,
        user_id: str,
        total: Decimal,
        amount: Decimal,
        lines: Sequence[NewOrderLine],
        reserve_s: int | None = None,
    ) -> tuple[int, dt.datetime]:
        """Write the order, its lines and its payment, and delete the paid cart lines
        (only those: a line added meanwhile stays). Returns (order id, created_at).
        With ``reserve_s`` the order is pending instead, for that long, with no
        payment yet (a payment provider charges it next)."""
        row = self._execute(
            WRITE_PAID_ORDER,
            {
                "status": "pending" if reserve_s is not None else "paid",
                "reserve_s": reserve_s or 0,
                "user_id": user_id,
                "total": total,
                "amount": amount,
                "item_ids": [line.item_id for line in lines],
                "quantities": [line.quantity for line in lines],
                "unit_prices": [line.unit_price for line in lines],
            },
        ).one()
        return row.id, row.created_at

    def next_ids(self, count: int) -> tuple[list[int], dt.datetime]:
        """Draw ``count`` order ids; also returns the transaction's time (created_at)."""
        rows = self._execute(NEXT_ORDER_IDS, {"n": count}).all()
        return [row.id for row in rows], rows[0].created_at

    def write_paid_many(
        self,
        orders: Sequence[NewOrder],
        keys: Sequence[NewKeyRecord],
        key_ttl_s: int,
        taken: Mapping[int, int],
        reserve_s: int | None = None,
    ) -> None:
        """Write every order with its lines and payment, delete exactly the paid cart
        lines, store the idempotency keys, and take ``taken`` ({item_id: units})
        from the item rows the caller has locked: one statement. With
        ``reserve_s`` the orders are pending that long, with no payments yet."""
        lines = [(order, line) for order in orders for line in order.lines]
        items = sorted(taken)
        self._execute(
            WRITE_PAID_ORDERS,
            {
                "status": "pending" if reserve_s is not None else "paid",
                "reserve_s": reserve_s or 0,
                "o_ids": [o.id for o in orders],
                "o_users": [o.user_id for o in orders],
                "o_totals": [o.total for o in orders],
                "l_orders": [o.id for o, _ in lines],
                "l_users": [o.user_id for o, _ in lines],
                "l_items": [ln.item_id for _, ln in lines],
                "l_quantities": [ln.quantity for _, ln in lines],
                "l_prices": [ln.unit_price for _, ln in lines],
                **_key_params(keys, key_ttl_s),
                "s_items": items,
                "s_quantities": [taken[i] for i in items],
            },
        )

    def get(self, order_id: int) -> OrderRecord | None:
        stmt = _ORDER_WITH_LINES.where(Order.id == order_id).order_by(OrderLine.item_id)
        found = _orders_from_rows(self._execute(stmt, {}))
        return found[0] if found else None

    def lock(self, order_id: int) -> OrderRecord | None:
        """The order, its row locked FOR UPDATE (a change of status: the last word
        between a cancel, a refund, a confirmation and an expiry), with its lines."""
        locked = self._execute(
            select(Order.id).where(Order.id == order_id).with_for_update(), {}
        ).first()
        return self.get(order_id) if locked else None

    def pending_ids(self, limit: int, *, expired: bool) -> list[int]:
        """Pending orders (oldest first); only those past their expiry with ``expired``."""
        stmt = select(Order.id).where(Order.status == "pending")
        if expired:
            stmt = stmt.where(Order.expires_at <= func.now())
        return list(self._execute(stmt.order_by(Order.id).limit(limit), {}).scalars())

    def open_charges(self, limit: int) -> list[tuple[int, str]]:
        """(order id, status) of the orders whose charge at the provider is open:
        pending ones, and those that ended before it was settled (oldest first)."""
        stmt = (
            select(Order.id, Order.status)
            .where(Order.charge == CHARGE_OPEN)
            .order_by(Order.id)
            .limit(limit)
        )
        return [(order_id, status) for order_id, status in self._execute(stmt, {})]

    def provider_orders(self, limit: int) -> list[tuple[int, str, str]]:
        """(order id, status, charge) of the newest orders that went through the
        provider (``limit`` at most)."""
        stmt = (
            select(Order.id, Order.status, Order.charge)
            .where(Order.charge != CHARGE_INSTANT)
            .order_by(Order.id.desc())
            .limit(limit)
        )
        return [tuple(row) for row in self._execute(stmt, {})]  # type: ignore[misc]

    def unconfirmed_refunds(self, limit: int) -> list[tuple[int, Decimal]]:
        """(order id, amount) of the refunds the provider has not confirmed yet."""
        stmt = (
            select(Refund.order_id, Refund.amount)
            .where(Refund.confirmed_at.is_(None))
            .order_by(Refund.order_id)
            .limit(limit)
        )
        return [(order_id, amount) for order_id, amount in self._execute(stmt, {})]

    def confirm_refund(self, order_id: int) -> None:
        self._execute(
            update(Refund)
            .where(Refund.order_id == order_id, Refund.confirmed_at.is_(None))
            .values(confirmed_at=func.now()),
            {},
        )

    def add_payment(self, order_id: int, amount: Decimal) -> None:
        self._execute(insert(Payment).values(order_id=order_id, amount=amount), {})

    def set_status(self, order_id: int, status: str, charge: str | None = None) -> None:
        """A new status (the reservation's expiry ends with it); with ``charge``,
        what is now known of the order's charge."""
        values: dict[str, Any] = {"status": status, "expires_at": None}
        if charge is not None:
            values["charge"] = charge
        self._execute(update(Order).where(Order.id == order_id).values(**values), {})

    def add_refund(self, order_id: int, amount: Decimal, *, confirmed: bool) -> None:
        """A refund of the order; ``confirmed``: the money already went back (the
        provider confirmed it, or there is no provider)."""
        self._execute(
            insert(Refund).values(
                order_id=order_id,
                amount=amount,
                confirmed_at=func.now() if confirmed else None,
            ),
            {},
        )

    def for_user(self, user_id: str, limit: int, before: int | None = None) -> list[OrderRecord]:
        """The user's newest orders first, ``limit`` at most, ids below ``before``."""
        page = select(Order.id).where(Order.user_id == user_id)
        if before is not None:
            page = page.where(Order.id < before)
        page = page.order_by(Order.id.desc()).limit(limit)
        stmt = _ORDER_WITH_LINES.where(Order.id.in_(page.scalar_subquery())).order_by(
            Order.id.desc(), OrderLine.item_id
        )
        return _orders_from_rows(self._execute(stmt, {}))


class IdempotencyRepository(_Repository):
    def try_lock(self, user_id: str, key: str) -> bool:
        """Transaction-scoped advisory lock on (user, key); False if another
        transaction holds it, i.e. the first request with this key is still running."""
        lock_id = func.hashtextextended(func.concat_ws("\x1f", user_id, key), 0)
        return bool(self._execute(select(func.pg_try_advisory_xact_lock(lock_id)), {}).scalar())

    def try_lock_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """:meth:`try_lock` for many (user, key) pairs in one statement, in their order."""
        params = {"users": [u for u, _ in pairs], "keys": [k for _, k in pairs]}
        return [bool(taken) for (taken,) in self._execute(TRY_LOCK_KEYS, params)]

    def find_live_many(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredResult]:
        """:meth:`find_live` for many (user, key) pairs in one statement."""
        params = {"users": [u for u, _ in pairs], "keys": [k for _, k in pairs]}
        return {
            (row.user_id, row.key): StoredResult(row.fingerprint, bytes(row.result))
            for row in self._execute(FIND_LIVE_KEYS, params)
        }

    def commit_waits_for_replicas(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Rewrite these (user, key) records unchanged, so that this transaction's
        COMMIT is written and waits for the synchronous standby like any write (a
        transaction that writes nothing commits without waiting): a replay answers
        only once everything before it, the first request's commit included (it
        may have been answered 503 when its own wait was cut short), has reached
        the standby."""
        self._execute(
            update(IdempotencyKey)
            .where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(pairs))
            .values(expires_at=IdempotencyKey.expires_at),
            {},
        )

    def find_live(self, user_id: str, key: str) -> StoredResult | None:
        stmt = select(IdempotencyKey.fingerprint, IdempotencyKey.result).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at > func.now(),
        )
        row = self._execute(stmt, {}).first()
        return StoredResult(row.fingerprint, bytes(row.result)) if row else None

    def save(self, user_id: str, key: str, fingerprint: str, result: bytes, ttl_s: int) -> None:
        values = {
            "user_id": user_id,
            "key": key,
            "fingerprint": fingerprint,
            "result": result,
            "expires_at": func.now() + dt.timedelta(seconds=ttl_s),
        }
        # An expired row with the same key may still be there: replace it.
        stmt = pg_insert(IdempotencyKey).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={k: stmt.excluded[k] for k in values if k not in ("user_id", "key")}
            | {"created_at": func.now()},
        )
        self._execute(stmt, {})

    def save_many(self, keys: Sequence[NewKeyRecord], ttl_s: int) -> None:
        """:meth:`save` for many keys in one statement."""
        self._execute(SAVE_KEYS, _key_params(keys, ttl_s))

    def delete_expired(self) -> int:
        result = self._execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.expires_at <= func.now())
            .returning(IdempotencyKey.key),
            {},
        )
        return len(result.all())


def _key_params(keys: Sequence[NewKeyRecord], ttl_s: int) -> dict[str, Any]:
    return {
        "k_users": [k.user_id for k in keys],
        "k_keys": [k.key for k in keys],
        "k_fingerprints": [k.fingerprint for k in keys],
        "k_results": [k.result for k in keys],
        "ttl_s": ttl_s,
    }


class ConsoleLinkRepository(_Repository):
    def add(self, nonce: str, admin: str, ttl_s: int) -> None:
        self._execute(
            insert(ConsoleLink).values(
                nonce=nonce, admin=admin, expires_at=func.now() + dt.timedelta(seconds=ttl_s)
            ),
            {},
        )

    def redeem(self, nonce: str) -> str | None:
        """Mark the link used; its admin, or None if unknown, used or expired."""
        stmt = (
            update(ConsoleLink)
            .where(
                ConsoleLink.nonce == nonce,
                ConsoleLink.used_at.is_(None),
                ConsoleLink.expires_at > func.now(),
            )
            .values(used_at=func.now())
            .returning(ConsoleLink.admin)
        )
        return self._execute(stmt, {}).scalar_one_or_none()


#: Pending reservations: how many, and when the next one lapses.
CONSOLE_PENDING = text("SELECT count(*), min(expires_at) FROM orders WHERE status = 'pending'")
# The server this session reached, its role, and its standbys (pg_stat_replication
# shows its rows to a superuser or a member of pg_monitor / pg_read_all_stats).
CONSOLE_DATABASE = text(
    "SELECT coalesce(host(inet_server_addr()), 'socket') || ':' || current_setting('port')"
    " AS server,"
    " NOT pg_is_in_recovery() AS primary,"
    " (SELECT count(*) FROM pg_stat_replication) AS standbys,"
    " (SELECT count(*) FROM pg_stat_replication"
    "  WHERE sync_state IN ('sync', 'quorum') AND state = 'streaming') AS synchronous"
)


@dataclass(frozen=True)
class DatabaseStateRow:
    server: str  # address:port of the PostgreSQL server reached
    primary: bool
    standbys: int  # attached
    synchronous: int  # of them, confirming commits


class ConsoleRepository(_Repository):
    def pending(self) -> tuple[int, dt.datetime | None]:
        count, next_expiry = self._execute(CONSOLE_PENDING, {}).one()
        return count, next_expiry

    def database(self) -> DatabaseStateRow:
        row = self._execute(CONSOLE_DATABASE, {}).one()
        return DatabaseStateRow(row.server, row.primary, row.standbys, row.synchronous)


class SchemaRepository(_Repository):
    def takes_writes(self) -> bool:
        """Whether this session may write (False on a standby, or a server set
        read-only)."""
        read_only = self._execute(select(func.current_setting("transaction_read_only")), {})
        return read_only.scalar() == "off"

    def revision(self) -> str | None:
        """The Alembic revision the database is at (None: never migrated)."""
        if self._execute(select(func.to_regclass("public.alembic_version")), {}).scalar() is None:
            return None
        return self._execute(text("SELECT version_num FROM alembic_version"), {}).scalar()
