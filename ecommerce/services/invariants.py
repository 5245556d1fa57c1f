"""The shop's invariants, checked from the data alone (`flask check-invariants`,
the simulator and the tests all use this module).

* stock is never negative;
* conservation: for every item, units received (arrivals in the stock ledger)
  minus units in orders that hold stock (pending, paid) equals current stock —
  no unit sold twice, none lost;
* an order that gave its stock back (payment_failed, expired, cancelled,
  refunded) has a return movement of exactly its units, per line; no other
  order has one;
* every order has lines and a total equal to the sum of its lines; a paid or
  refunded order has exactly one payment of its total, other orders none; a
  refunded order has a refund of its total, other orders none;
* no cart line points at a missing item;
* no order is still pending more than :data:`SWEEP_GRACE` after its expiry
  (`flask release-expired` runs every minute from cron, see docs/OPERATIONS.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.models import ARRIVALS, STATUSES_HOLDING_STOCK
from ecommerce.services import Shop, settlement

#: How long past its expiry a pending order may wait for the sweep: the cron
#: interval of `flask release-expired` (a minute) with room to spare.
SWEEP_GRACE = "5 minutes"

_HOLDING = ", ".join(f"'{s}'" for s in STATUSES_HOLDING_STOCK)
_ARRIVALS = ", ".join(f"'{r}'" for r in ARRIVALS)

#: Per item: units that arrived (ledger), units in orders holding stock, stock now.
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

CHECKS: dict[str, str] = {
    "negative_stock": f"SELECT item_id, stock FROM ({_BOOKS}) b WHERE stock < 0 ORDER BY item_id",
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
    "payment_mismatch": """
        SELECT o.id AS order_id, o.status, o.total, p.amount FROM orders o
        LEFT JOIN payments p ON p.order_id = o.id
        WHERE CASE WHEN o.status IN ('paid', 'refunded') THEN p.amount IS DISTINCT FROM o.total
                   ELSE p.order_id IS NOT NULL END
        ORDER BY o.id""",
    "refund_mismatch": """
        SELECT o.id AS order_id, o.status, o.total, r.amount FROM orders o
        LEFT JOIN refunds r ON r.order_id = o.id
        WHERE CASE WHEN o.status = 'refunded' THEN r.amount IS DISTINCT FROM o.total
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
        WHERE o.status = 'pending' AND o.expires_at < now() - interval '{SWEEP_GRACE}'
        ORDER BY o.id""",
    "cart_line_for_missing_item": """
        SELECT c.user_id, c.item_id FROM carts c
        LEFT JOIN items i ON i.id = c.item_id WHERE i.id IS NULL""",
}


@dataclass(frozen=True)
class Violation:
    check: str
    row: dict[str, object]

    def __str__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.row.items())
        return f"{self.check}: {fields}"


@dataclass(frozen=True)
class ItemBook:
    """One item's stock account."""

    item_id: int
    received: Decimal
    in_orders: Decimal
    stock: Decimal

    @property
    def oversold(self) -> Decimal:
        """Units in orders beyond what ever arrived: sold that did not exist."""
        return max(Decimal(0), self.in_orders - self.received)

    @property
    def unexplained(self) -> Decimal:
        """Units gone from stock (or added to it) that no order line or ledger row explains."""
        return self.received - self.in_orders - self.stock


def find_violations(session: Session) -> list[Violation]:
    violations = []
    for name, sql in CHECKS.items():
        for row in session.execute(text(sql), {"item_ids": None}).mappings():
            violations.append(Violation(name, dict(row)))
    return violations


def check(shop: Shop) -> list[Violation]:
    """Every violation of the shop's invariants, read in one transaction; with a
    payment provider, also where its view of the money disagrees with the orders
    (it keeps money exactly for the paid orders: settlement.provider_disagreements)."""
    violations = shop.transaction(find_violations, "check_invariants")
    if shop.gateway is not None:
        violations += [
            Violation("provider_disagrees", {"order": found})
            for found in settlement.provider_disagreements(shop)
        ]
    return violations


def books(shop: Shop, item_ids: Iterable[int]) -> list[ItemBook]:
    """The stock account of each of these items, read in one transaction."""

    def work(session: Session) -> list[ItemBook]:
        rows = session.execute(text(_BOOKS + " ORDER BY i.id"), {"item_ids": list(item_ids)})
        return [ItemBook(*row) for row in rows]

    return shop.transaction(work, "stock_books")
