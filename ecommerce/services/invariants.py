"""The shop's invariants, checked from the data alone (`flask check-invariants`,
the simulator and the tests all use this module).

* stock is never negative;
* conservation: for every item, units received (the stock ledger) minus units
  in order lines equals current stock — no unit sold twice, none lost;
* every order has lines, exactly one payment equal to its total, and a total
  equal to the sum of its lines;
* no cart line points at a missing item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.services import Shop

#: Per item: units received through the ledger, units in order lines, stock now.
_BOOKS = """
    SELECT i.id AS item_id, coalesce(m.received, 0) AS received,
           coalesce(l.in_orders, 0) AS in_orders, i.stock
    FROM items i
    LEFT JOIN (SELECT item_id, sum(quantity) AS received FROM stock_movements
               GROUP BY item_id) m ON m.item_id = i.id
    LEFT JOIN (SELECT item_id, sum(quantity) AS in_orders FROM order_lines
               GROUP BY item_id) l ON l.item_id = i.id
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
        SELECT o.id AS order_id, o.total, p.amount FROM orders o
        LEFT JOIN payments p ON p.order_id = o.id
        WHERE p.amount IS DISTINCT FROM o.total ORDER BY o.id""",
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
    """Every violation of the shop's invariants, read in one transaction."""
    return shop.transaction(find_violations, "check_invariants")


def books(shop: Shop, item_ids: Iterable[int]) -> list[ItemBook]:
    """The stock account of each of these items, read in one transaction."""

    def work(session: Session) -> list[ItemBook]:
        rows = session.execute(text(_BOOKS + " ORDER BY i.id"), {"item_ids": list(item_ids)})
        return [ItemBook(*row) for row in rows]

    return shop.transaction(work, "stock_books")
