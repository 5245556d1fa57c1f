"""Orders: writing a paid (or pending) order with its lines, payment and the paid
cart lines gone (one order, or a combined batch's with their idempotency keys and
stock), reading orders with their lines, and their statuses, charges, payments
and refunds afterwards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Text, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from ecommerce.models import (
    CHARGE_INSTANT,
    CHARGE_OPEN,
    ORDER_STATUS_PAID,
    ORDER_STATUS_PENDING,
    STATUSES_HOLDING_STOCK,
    Item,
    Order,
    OrderLine,
    Payment,
    Refund,
)
from ecommerce.repositories._base import _Repository, sql_string
from ecommerce.repositories.idempotency import IdempotencyRepository, NewKeyRecord, key_params

_PENDING = sql_string(ORDER_STATUS_PENDING)
_PAID = sql_string(ORDER_STATUS_PAID)
_OPEN = sql_string(CHARGE_OPEN)
_INSTANT = sql_string(CHARGE_INSTANT)


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


class OrderRepository(_Repository):
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

    def held_units(
        self, user_ids: Iterable[str], item_ids: Iterable[int]
    ) -> dict[tuple[str, int], int]:
        """Units of each item each user holds in orders that hold stock:
        {(user_id, item_id): units}, absent when none."""
        rows = self._execute(
            self.HELD_UNITS,
            {
                "users": sorted(set(user_ids)),
                "items": sorted(set(item_ids)),
                "statuses": list(STATUSES_HOLDING_STOCK),
            },
        )
        return {(user, item): units for user, item, units in rows}

    #: The pay: ids for the batch's new orders, before the item rows are locked.
    NEXT_ORDER_IDS = text(
        "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id FROM generate_series(1, :n)"
    )

    def next_ids(self, count: int) -> list[int]:
        """Draw ``count`` order ids."""
        return [row.id for row in self._execute(self.NEXT_ORDER_IDS, {"n": count})]

    #: The pay: every winner's order, lines, payment, the paid cart lines gone,
    #: the idempotency records (idempotency's SAVE_KEYS), and one decrement per item,
    #: in one statement. Arrays are parallel: per order (o_*), per order line (l_*),
    #: per key (k_*), per item (s_*).
    WRITE_PAID_ORDERS = text(
        f"""
    WITH new_orders AS (
        INSERT INTO orders (id, user_id, status, total, created_at, expires_at, charge)
        SELECT o.id, o.user_id, :status, o.total, CAST(:now AS timestamptz),
               CASE WHEN :status = {_PENDING}
               THEN CAST(:now AS timestamptz) + make_interval(secs => :reserve_s) END,
               CASE WHEN :status = {_PENDING} THEN {_OPEN} ELSE {_INSTANT} END
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
        WHERE o.id IN (SELECT id FROM new_orders) AND :status = {_PAID}
    ), paid_lines AS (
        DELETE FROM carts USING unnest(CAST(:l_users AS text[]), CAST(:l_items AS integer[]))
                                AS l (user_id, item_id)
        WHERE carts.user_id = l.user_id AND carts.item_id = l.item_id
    ), new_keys AS ({IdempotencyRepository.SAVE_KEYS.text}
    )
    UPDATE items SET stock = items.stock - s.quantity
    FROM unnest(CAST(:s_items AS integer[]), CAST(:s_quantities AS integer[])) AS s (id, quantity)
    WHERE items.id = s.id
    """
    )

    def write_paid(
        self,
        orders: Sequence[NewOrder],
        keys: Sequence[NewKeyRecord],
        key_ttl_s: int,
        taken: Mapping[int, int],
        now: dt.datetime,
        reserve_s: int | None = None,
    ) -> None:
        """Write every order (made at ``now``) with its lines and payment, delete
        exactly the paid cart lines, store the idempotency keys, and take
        ``taken`` ({item_id: units}) from the item rows the caller has locked:
        one statement. With ``reserve_s`` the orders are pending that long from
        ``now``, with no payments yet."""
        lines = [(order, line) for order in orders for line in order.lines]
        items = sorted(taken)
        self._execute(
            self.WRITE_PAID_ORDERS,
            {
                "status": ORDER_STATUS_PENDING if reserve_s is not None else ORDER_STATUS_PAID,
                "reserve_s": reserve_s or 0,
                "o_ids": [o.id for o in orders],
                "o_users": [o.user_id for o in orders],
                "o_totals": [o.total for o in orders],
                "l_orders": [o.id for o, _ in lines],
                "l_users": [o.user_id for o, _ in lines],
                "l_items": [ln.item_id for _, ln in lines],
                "l_quantities": [ln.quantity for _, ln in lines],
                "l_prices": [ln.unit_price for _, ln in lines],
                **key_params(keys, key_ttl_s, now),
                "s_items": items,
                "s_quantities": [taken[i] for i in items],
            },
        )

    #: Orders with their lines and each line's item name (get, for_user add the rest).
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

    def get(self, order_id: int) -> OrderRecord | None:
        stmt = self._ORDER_WITH_LINES.where(Order.id == order_id).order_by(OrderLine.item_id)
        found = _orders_from_rows(self._execute(stmt, {}))
        return found[0] if found else None

    def lock(self, order_id: int) -> OrderRecord | None:
        """The order, its row locked FOR UPDATE (a change of status: the last word
        between a cancel, a refund, a confirmation and an expiry), with its lines."""
        locked = self._execute(
            select(Order.id).where(Order.id == order_id).with_for_update(), {}
        ).first()
        return self.get(order_id) if locked else None

    def pending_ids(self, limit: int, *, expired_at: dt.datetime | None = None) -> list[int]:
        """Pending orders (oldest first); only those past their expiry at
        ``expired_at`` when given."""
        stmt = select(Order.id).where(Order.status == ORDER_STATUS_PENDING)
        if expired_at is not None:
            stmt = stmt.where(Order.expires_at <= expired_at)
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

    def refund_unconfirmed(self, order_id: int) -> bool:
        """Whether the order has a refund the provider has not confirmed yet."""
        stmt = select(Refund.order_id).where(
            Refund.order_id == order_id, Refund.confirmed_at.is_(None)
        )
        return self._execute(stmt, {}).first() is not None

    def confirm_refund(self, order_id: int, now: dt.datetime) -> None:
        self._execute(
            update(Refund)
            .where(Refund.order_id == order_id, Refund.confirmed_at.is_(None))
            .values(confirmed_at=now),
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

    def add_refund(
        self, order_id: int, amount: Decimal, now: dt.datetime, *, confirmed: bool
    ) -> None:
        """A refund of the order, made at ``now``; ``confirmed``: the money
        already went back (the provider confirmed it, or there is no provider)."""
        self._execute(
            insert(Refund).values(
                order_id=order_id,
                amount=amount,
                created_at=now,
                confirmed_at=now if confirmed else None,
            ),
            {},
        )

    def for_user(self, user_id: str, limit: int, before: int | None = None) -> list[OrderRecord]:
        """The user's newest orders first, ``limit`` at most, ids below ``before``."""
        page = select(Order.id).where(Order.user_id == user_id)
        if before is not None:
            page = page.where(Order.id < before)
        page = page.order_by(Order.id.desc()).limit(limit)
        stmt = self._ORDER_WITH_LINES.where(Order.id.in_(page.scalar_subquery())).order_by(
            Order.id.desc(), OrderLine.item_id
        )
        return _orders_from_rows(self._execute(stmt, {}))


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
