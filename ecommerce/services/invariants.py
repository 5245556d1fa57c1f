"""The shop's invariants, checked from the data alone (`flask check-invariants`).

* stock is never negative;
* conservation: for every item, units received (the stock ledger) minus units
  in order lines equals current stock — no unit sold twice, none lost;
* every order has lines, exactly one payment equal to its total, and a total
  equal to the sum of its lines;
* no cart line points at a missing item.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

CHECKS: dict[str, str] = {
    "negative_stock": "SELECT id AS item_id, stock FROM items WHERE stock < 0 ORDER BY id",
    "stock_not_conserved": """
        SELECT i.id AS item_id, i.stock, coalesce(m.received, 0) AS received,
               coalesce(l.sold, 0) AS sold,
               coalesce(m.received, 0) - coalesce(l.sold, 0) - i.stock AS unexplained
        FROM items i
        LEFT JOIN (SELECT item_id, sum(quantity) AS received FROM stock_movements
                   GROUP BY item_id) m ON m.item_id = i.id
        LEFT JOIN (SELECT item_id, sum(quantity) AS sold FROM order_lines
                   GROUP BY item_id) l ON l.item_id = i.id
        WHERE coalesce(m.received, 0) - coalesce(l.sold, 0) <> i.stock
        ORDER BY i.id""",
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


def find_violations(session: Session) -> list[Violation]:
    violations = []
    for name, sql in CHECKS.items():
        for row in session.execute(text(sql)).mappings():
            violations.append(Violation(name, dict(row)))
    return violations
