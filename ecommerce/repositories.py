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
from dataclasses import dataclass
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
    CartLine,
    IdempotencyKey,
    Item,
    Order,
    OrderLine,
    StockMovement,
)

# --- The pay's statements ------------------------------------------------------
# Built once (SQLAlchemy caches their compiled form). The flash-sale simulator
# compiles these same objects into its pgbench script, so the database ceiling it
# measures is for exactly the SQL the shop sends.

_ITEM_IDS = bindparam("item_ids", type_=ARRAY(Integer))

#: A user's cart with each line's item name, price and current stock.
CART_LINES = (
    select(CartLine.item_id, Item.name, CartLine.quantity, Item.price, Item.stock)
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
    )
)

#: The user's cart lines, locked FOR UPDATE OF carts (items are only read here).
LOCK_CART_FOR_PAY = (
    select(CartLine.item_id, Item.name, CartLine.quantity, Item.price, Item.stock)
    .join(Item, Item.id == CartLine.item_id)
    .where(CartLine.user_id == bindparam("user_id"))
    .order_by(CartLine.item_id)
    .with_for_update(of=CartLine)
)

#: Order, lines, payment, and the paid cart lines gone: one round trip.
WRITE_PAID_ORDER = text(
    """
    WITH new_order AS (
        INSERT INTO orders (user_id, status, total)
        VALUES (:user_id, 'paid', :total)
        RETURNING id, created_at
    ), new_lines AS (
        INSERT INTO order_lines (order_id, item_id, quantity, unit_price)
        SELECT new_order.id, line.item_id, line.quantity, line.unit_price
        FROM new_order, unnest(CAST(:item_ids AS integer[]), CAST(:quantities AS integer[]),
                               CAST(:unit_prices AS numeric[]))
                        AS line (item_id, quantity, unit_price)
    ), new_payment AS (
        INSERT INTO payments (order_id, amount) SELECT id, :amount FROM new_order
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

#: for_update: the design note's locking read, ascending id, FOR NO KEY UPDATE.
LOCK_ITEMS = (
    select(Item.id, Item.name, Item.price, Item.stock)
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
    .returning(Item.id)
)

ALL_ITEMS = select(Item.id, Item.name, Item.price, Item.stock).order_by(Item.id)

READ_ITEMS = (
    select(Item.id, Item.name, Item.price, Item.stock)
    .where(Item.id == any_(_ITEM_IDS))
    .order_by(Item.id)
)


@dataclass(frozen=True)
class ItemRow:
    """An item's columns as one statement read them (locked or not)."""

    id: int
    name: str
    price: Decimal
    stock: Decimal


@dataclass(frozen=True)
class CartLineRow:
    """A cart line with its item's name, current price and current stock."""

    item_id: int
    name: str
    quantity: int
    price: Decimal
    stock: Decimal


@dataclass(frozen=True)
class AddedLine:
    """A cart line right after an add: its new quantity, and its item's name and stock."""

    quantity: int
    name: str
    stock: Decimal


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
    lines: list[OrderLineRecord]


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


_ITEM_COLUMNS = (Item.id, Item.name, Item.price, Item.stock)


class ItemRepository(_Repository):
    def get(self, item_id: int) -> ItemRow | None:
        rows = self.read([item_id])
        return rows[0] if rows else None

    def list(self) -> list[ItemRow]:
        return [ItemRow(*row) for row in self._execute(ALL_ITEMS, {})]

    def find_by_name(self, name: str) -> ItemRow | None:
        row = self._execute(select(*_ITEM_COLUMNS).where(Item.name == name).limit(1), {}).first()
        return ItemRow(*row) if row else None

    def add(self, name: str, price: Decimal, stock: Decimal) -> ItemRow:
        """A new item; its opening stock is recorded in the stock ledger."""
        row = self._execute(
            insert(Item).values(name=name, price=price, stock=stock).returning(*_ITEM_COLUMNS), {}
        ).one()
        item = ItemRow(*row)
        if stock > 0:
            self._record_arrival(item.id, stock, "initial")
        return item

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

    def decrement(self, quantities: Mapping[int, int]) -> None:
        """Subtract quantities from stock in one statement (rows already locked)."""
        ids = sorted(quantities)
        self._execute(
            DECREMENT_ITEMS, {"item_ids": ids, "quantities": [quantities[i] for i in ids]}
        )

    def take_if_available(self, item_id: int, quantity: int, expected_price: Decimal) -> bool:
        """Conditional decrement: one statement that locks, checks and writes.

        False when the row does not have ``quantity`` in stock (or its price changed).
        """
        row = self._execute(
            TAKE_IF_AVAILABLE,
            {"take_id": item_id, "take_quantity": quantity, "expected_price": expected_price},
        ).first()
        return row is not None

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
                row.id, row.user_id, row.status, row.total, row.created_at, []
            )
        order.lines.append(OrderLineRecord(row.item_id, row.name, row.quantity, row.unit_price))
    return list(orders.values())


class OrderRepository(_Repository):
    def write_paid(
        self, user_id: str, total: Decimal, amount: Decimal, lines: Sequence[NewOrderLine]
    ) -> tuple[int, dt.datetime]:
        """Write the order, its lines and its payment, and delete the paid cart lines
        (only those: a line added meanwhile stays). Returns (order id, created_at)."""
        row = self._execute(
            WRITE_PAID_ORDER,
            {
                "user_id": user_id,
                "total": total,
                "amount": amount,
                "item_ids": [line.item_id for line in lines],
                "quantities": [line.quantity for line in lines],
                "unit_prices": [line.unit_price for line in lines],
            },
        ).one()
        return row.id, row.created_at

    def get(self, order_id: int) -> OrderRecord | None:
        stmt = _ORDER_WITH_LINES.where(Order.id == order_id).order_by(OrderLine.item_id)
        found = _orders_from_rows(self._execute(stmt, {}))
        return found[0] if found else None

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

    def delete_expired(self) -> int:
        result = self._execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.expires_at <= func.now())
            .returning(IdempotencyKey.key),
            {},
        )
        return len(result.all())
