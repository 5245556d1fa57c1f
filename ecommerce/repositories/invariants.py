"""The shop's invariants as SQL: one query per check, each returning the rows
that break it, and the stock books they rest on (ecommerce.services.invariants
says what each check means and turns these rows into its results)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text

from ecommerce.models import (
    ARRIVALS,
    ORDER_STATUS_PAID,
    ORDER_STATUS_PENDING,
    ORDER_STATUS_REFUNDED,
    STATUSES_HOLDING_STOCK,
)
from ecommerce.repositories._base import _Repository, sql_string

#: How long past its expiry a pending order may wait for the sweep: the cron
#: interval of `flask release-expired` (a minute) with room to spare.
SWEEP_GRACE = "5 minutes"

_HOLDING = ", ".join(sql_string(s) for s in STATUSES_HOLDING_STOCK)
_ARRIVALS = ", ".join(sql_string(r) for r in ARRIVALS)
_PENDING = sql_string(ORDER_STATUS_PENDING)
_PAID = sql_string(ORDER_STATUS_PAID)
_REFUNDED = sql_string(ORDER_STATUS_REFUNDED)


@dataclass(frozen=True)
class ViolationRow:
    """A row that breaks a check: the check's name and the row's columns."""

    check: str
    row: dict[str, object]


@dataclass(frozen=True)
class StockBookRow:
    """One item's stock account: units that arrived, units in orders holding stock,
    stock now."""

    item_id: int
    received: Decimal
    in_orders: Decimal
    stock: Decimal


class InvariantRepository(_Repository):
    #: Per item: units that arrived (ledger), units in orders holding stock, stock
    #: now (:item_ids NULL: every item).
    _BOOKS = f"""
    SELECT i.id AS item_id, coalesce(m.received, 0) AS received,
           coalesce(l.in_orders, 0) AS in_orders, i.stock
    FROM items i
    LEFT JOIN (SELECT item_id, sum(quantity) AS received FROM stock_movements
               WHERE reason IN ({_ARRIVALS}) GROUP BY item_id) m ON m.item_id = i.id
    LEFT JOIN (SELECT ol.item_id, sum(ol.quantity) AS in_orders
               FROM order_lines ol JOIN orders o ON o.id = ol.order_id
               WHERE o.status IN ({_HOLDING}) GROUP BY ol.item_id) l ON l.item_id = i.id
    WHERE CAST(:item_ids AS integer[]) IS NULL OR i.id = ANY (CAST(:item_ids AS integer[]))"""

    #: Each check by name: the rows that break it, in a stable order.
    CHECKS: dict[str, str] = {
        "negative_stock": f"SELECT item_id, stock FROM ({_BOOKS}) b"
        " WHERE stock < 0 ORDER BY item_id",
        "stock_not_conserved": f"""
        SELECT item_id, stock, received, in_orders AS sold,
               received - in_orders - stock AS unexplained
        FROM ({_BOOKS}) b WHERE received - in_orders <> stock ORDER BY item_id""",
        "order_without_lines": """
        SELECT o.id AS order_id FROM orders o
        WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id) ORDER BY o.id""",
        "order_total_mismatch": """
        SELECT o.id AS order_id, o.total, sum(l.quantity * l.unit_price) AS lines_total
        FROM orders o JOIN order_lines l ON l.order_id = o.id
        GROUP BY o.id, o.total HAVING o.total <> sum(l.quantity * l.unit_price) ORDER BY o.id""",
        "payment_mismatch": f"""
        SELECT o.id AS order_id, o.status, o.total, p.amount FROM orders o
        LEFT JOIN payments p ON p.order_id = o.id
        WHERE CASE WHEN o.status IN ({_PAID}, {_REFUNDED}) THEN p.amount IS DISTINCT FROM o.total
                   ELSE p.order_id IS NOT NULL END
        ORDER BY o.id""",
        "refund_mismatch": f"""
        SELECT o.id AS order_id, o.status, o.total, r.amount FROM orders o
        LEFT JOIN refunds r ON r.order_id = o.id
        WHERE CASE WHEN o.status = {_REFUNDED} THEN r.amount IS DISTINCT FROM o.total
                   ELSE r.order_id IS NOT NULL END
        ORDER BY o.id""",
        "stock_return_mismatch": f"""
        SELECT o.id AS order_id, o.status, ol.item_id, ol.quantity,
               coalesce(m.returned, 0) AS returned
        FROM orders o JOIN order_lines ol ON ol.order_id = o.id
        LEFT JOIN (SELECT order_id, item_id, sum(quantity) AS returned FROM stock_movements
                   WHERE order_id IS NOT NULL GROUP BY order_id, item_id) m
               ON m.order_id = o.id AND m.item_id = ol.item_id
        WHERE coalesce(m.returned, 0)
              <> CASE WHEN o.status IN ({_HOLDING}) THEN 0 ELSE ol.quantity END
        ORDER BY o.id, ol.item_id""",
        "pending_past_expiry": f"""
        SELECT o.id AS order_id, o.expires_at FROM orders o
        WHERE o.status = {_PENDING}
          AND o.expires_at < CAST(:now AS timestamptz) - interval '{SWEEP_GRACE}'
        ORDER BY o.id""",
        "cart_line_for_missing_item": """
        SELECT c.user_id, c.item_id FROM carts c
        LEFT JOIN items i ON i.id = c.item_id WHERE i.id IS NULL""",
    }

    def violations(self, now: dt.datetime) -> list[ViolationRow]:
        """Every row that breaks a check at ``now``, check by check in CHECKS' order."""
        found = []
        for name, sql in self.CHECKS.items():
            for row in self._execute(text(sql), {"item_ids": None, "now": now}).mappings():
                found.append(ViolationRow(name, dict(row)))
        return found

    BOOKS = text(_BOOKS + " ORDER BY i.id")

    def books(self, item_ids: Iterable[int]) -> list[StockBookRow]:
        """The stock account of each of these items, in id order."""
        rows = self._execute(self.BOOKS, {"item_ids": list(item_ids)})
        return [StockBookRow(*row) for row in rows]
