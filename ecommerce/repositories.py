"""Repositories: all SQL lives here. Each takes a session and never commits;
the service that calls it owns the transaction.

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

from sqlalchemy import Integer, Row, column, delete, func, select, update, values
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, selectinload

from ecommerce.models import (
    ORDER_STATUS_PAID,
    CartLine,
    IdempotencyKey,
    Item,
    Order,
    OrderLine,
    Payment,
    StockMovement,
)


@dataclass(frozen=True)
class LockedItem:
    id: int
    name: str
    price: Decimal
    stock: Decimal


@dataclass(frozen=True)
class NewOrderLine:
    item_id: int
    quantity: int
    unit_price: Decimal


class ItemRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, item_id: int) -> Item | None:
        return self.session.get(Item, item_id)

    def list(self) -> Sequence[Item]:
        return self.session.scalars(select(Item).order_by(Item.id)).all()

    def find_by_name(self, name: str) -> Item | None:
        return self.session.scalars(select(Item).where(Item.name == name).limit(1)).first()

    def add(self, name: str, price: Decimal, stock: Decimal) -> Item:
        """A new item; its opening stock is recorded in the stock ledger."""
        item = Item(name=name, price=price, stock=stock)
        self.session.add(item)
        self.session.flush()
        if stock > 0:
            self.session.add(StockMovement(item_id=item.id, quantity=stock, reason="initial"))
            self.session.flush()
        return item

    def restock(self, item_id: int, quantity: Decimal) -> Decimal | None:
        """Add units to stock and to the ledger; returns the new stock (None: no such item)."""
        new_stock = self.session.execute(
            update(Item)
            .where(Item.id == item_id)
            .values(stock=Item.stock + quantity)
            .returning(Item.stock)
        ).scalar_one_or_none()
        if new_stock is not None:
            self.session.add(StockMovement(item_id=item_id, quantity=quantity, reason="restock"))
            self.session.flush()
        return new_stock

    def lock(self, item_ids: Iterable[int]) -> list[LockedItem]:
        """SELECT ... ORDER BY id FOR NO KEY UPDATE: the pay's row locks, in id order."""
        stmt = (
            select(Item.id, Item.name, Item.price, Item.stock)
            .where(Item.id.in_(sorted(set(item_ids))))
            .order_by(Item.id)
            .with_for_update(key_share=True)
        )
        return [LockedItem(*row) for row in self.session.execute(stmt)]

    def read(self, item_ids: Iterable[int]) -> list[LockedItem]:
        """The same columns as :meth:`lock`, without a lock (quotes, error messages)."""
        stmt = (
            select(Item.id, Item.name, Item.price, Item.stock)
            .where(Item.id.in_(sorted(set(item_ids))))
            .order_by(Item.id)
        )
        return [LockedItem(*row) for row in self.session.execute(stmt)]

    def decrement(self, quantities: Mapping[int, int]) -> None:
        """Subtract quantities from stock in one statement (rows already locked)."""
        wanted = values(column("id", Integer), column("quantity", Integer), name="wanted").data(
            sorted(quantities.items())
        )
        self.session.execute(
            update(Item).where(Item.id == wanted.c.id).values(stock=Item.stock - wanted.c.quantity)
        )

    def take_if_available(self, item_id: int, quantity: int) -> LockedItem | None:
        """Conditional decrement: one statement that locks, checks and writes.

        Returns None when the row does not have ``quantity`` in stock.
        """
        stmt = (
            update(Item)
            .where(Item.id == item_id, Item.stock >= quantity)
            .values(stock=Item.stock - quantity)
            .returning(Item.id, Item.name, Item.price, Item.stock)
        )
        row = self.session.execute(stmt).first()
        return LockedItem(*row) if row is not None else None

    def overwrite_stock(self, item_id: int, stock: Decimal) -> None:
        """Write an absolute stock value. Only the unsafe demonstration strategy uses it."""
        self.session.execute(update(Item).where(Item.id == item_id).values(stock=stock))


class CartRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lines(self, user_id: str) -> Sequence[Row[tuple[int, str, int, Decimal, Decimal]]]:
        stmt = (
            select(CartLine.item_id, Item.name, CartLine.quantity, Item.price, Item.stock)
            .join(Item, Item.id == CartLine.item_id)
            .where(CartLine.user_id == user_id)
            .order_by(CartLine.item_id)
        )
        return self.session.execute(stmt).all()

    def lock_lines(self, user_id: str) -> dict[int, int]:
        """Lock the user's cart rows (FOR UPDATE); returns {item_id: quantity} by item id.

        Two pays of the same cart queue here; the second finds the rows deleted
        by the first and sees an empty cart.
        """
        stmt = (
            select(CartLine.item_id, CartLine.quantity)
            .where(CartLine.user_id == user_id)
            .order_by(CartLine.item_id)
            .with_for_update()
        )
        return {item_id: quantity for item_id, quantity in self.session.execute(stmt)}

    def add(self, user_id: str, item_id: int, quantity: int) -> int:
        """Add to the line (creating it if needed); returns the line's new quantity.

        The upsert locks the cart row, so concurrent adds to one line queue and
        each sees the quantity the previous one committed.
        """
        stmt = pg_insert(CartLine).values(user_id=user_id, item_id=item_id, quantity=quantity)
        stmt = stmt.on_conflict_do_update(
            index_elements=[CartLine.user_id, CartLine.item_id],
            set_={"quantity": CartLine.quantity + stmt.excluded.quantity},
        ).returning(CartLine.quantity)
        return self.session.execute(stmt).scalar_one()

    def remove(self, user_id: str, item_id: int) -> bool:
        result = self.session.execute(
            delete(CartLine)
            .where(CartLine.user_id == user_id, CartLine.item_id == item_id)
            .returning(CartLine.item_id)
        )
        return result.first() is not None

    def remove_lines(self, user_id: str, item_ids: Iterable[int]) -> None:
        """Delete exactly the lines that were paid (a line added meanwhile stays)."""
        self.session.execute(
            delete(CartLine).where(
                CartLine.user_id == user_id, CartLine.item_id.in_(sorted(item_ids))
            )
        )


class OrderRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create_paid(
        self, user_id: str, total: Decimal, lines: Sequence[NewOrderLine], amount: Decimal
    ) -> tuple[int, dt.datetime]:
        """Write the order, its lines and its payment; returns (order id, created_at)."""
        order_id, created_at = self.session.execute(
            pg_insert(Order)
            .values(user_id=user_id, status=ORDER_STATUS_PAID, total=total)
            .returning(Order.id, Order.created_at)
        ).one()
        self.session.execute(
            pg_insert(OrderLine),
            [
                {
                    "order_id": order_id,
                    "item_id": line.item_id,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for line in lines
            ],
        )
        self.session.execute(pg_insert(Payment).values(order_id=order_id, amount=amount))
        return order_id, created_at

    def get(self, order_id: int) -> Order | None:
        stmt = (
            select(Order)
            .where(Order.id == order_id)
            .options(selectinload(Order.lines).selectinload(OrderLine.item))
        )
        return self.session.scalars(stmt).first()

    def for_user(self, user_id: str, limit: int, before: int | None = None) -> Sequence[Order]:
        stmt = select(Order).where(Order.user_id == user_id)
        if before is not None:
            stmt = stmt.where(Order.id < before)
        stmt = (
            stmt.order_by(Order.id.desc())
            .limit(limit)
            .options(selectinload(Order.lines).selectinload(OrderLine.item))
        )
        return self.session.scalars(stmt).all()

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(Order)) or 0


class IdempotencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def try_lock(self, user_id: str, key: str) -> bool:
        """Transaction-scoped advisory lock on (user, key); False if another
        transaction holds it, i.e. the first request with this key is still running."""
        lock_id = func.hashtextextended(func.concat_ws("\x1f", user_id, key), 0)
        return bool(self.session.execute(select(func.pg_try_advisory_xact_lock(lock_id))).scalar())

    def find_live(self, user_id: str, key: str) -> IdempotencyKey | None:
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at > func.now(),
        )
        return self.session.scalars(stmt).first()

    def save(
        self, user_id: str, key: str, fingerprint: str, status: int, body: bytes, ttl_s: int
    ) -> None:
        values = {
            "user_id": user_id,
            "key": key,
            "fingerprint": fingerprint,
            "response_status": status,
            "response_body": body,
            "expires_at": func.now() + dt.timedelta(seconds=ttl_s),
        }
        # An expired row with the same key may still be there: replace it.
        stmt = pg_insert(IdempotencyKey).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={k: stmt.excluded[k] for k in values if k not in ("user_id", "key")}
            | {"created_at": func.now()},
        )
        self.session.execute(stmt)

    def delete_expired(self) -> int:
        result = self.session.execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.expires_at <= func.now())
            .returning(IdempotencyKey.key)
        )
        return len(result.all())
