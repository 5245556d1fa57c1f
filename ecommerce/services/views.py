"""What the use cases return: plain values, already in their JSON shape."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ecommerce.models import Order
from ecommerce.money import format_money
from ecommerce.repositories import ItemRow


def item_json(item: ItemRow) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "price": format_money(item.price),
        "stock": format_money(item.stock),
    }


@dataclass(frozen=True)
class LineView:
    item_id: int
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity

    def as_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "name": self.name,
            "quantity": self.quantity,
            "unit_price": format_money(self.unit_price),
            "line_total": format_money(self.line_total),
        }


def total_of(lines: list[LineView]) -> Decimal:
    return sum((line.line_total for line in lines), Decimal("0"))


@dataclass(frozen=True)
class OrderView:
    order_id: int
    user_id: str
    status: str
    total: Decimal
    created_at: dt.datetime
    lines: list[LineView]

    @classmethod
    def of(cls, order: Order) -> OrderView:
        return cls(
            order_id=order.id,
            user_id=order.user_id,
            status=order.status,
            total=order.total,
            created_at=order.created_at,
            lines=[
                LineView(line.item_id, line.item.name, line.quantity, line.unit_price)
                for line in order.lines
            ],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "status": self.status,
            "total": format_money(self.total),
            "created_at": self.created_at.isoformat(),
            "lines": [line.as_json() for line in self.lines],
        }
