"""Cart use cases: add, remove, view, and the read-only checkout quote."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.money import format_money
from ecommerce.repositories import CartRepository
from ecommerce.services import Shop
from ecommerce.services.stock import insufficient
from ecommerce.services.views import LineView, total_of


@dataclass(frozen=True)
class CartView:
    user_id: str
    lines: list[LineView]
    available: dict[int, Decimal]

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "lines": [line.as_json() for line in self.lines],
            "total": format_money(total_of(self.lines)),
        }

    def quote_json(self) -> dict[str, Any]:
        """The checkout quote: the cart plus, per line, whether stock suffices right now."""
        lines = []
        for line in self.lines:
            available = self.available[line.item_id]
            lines.append(
                line.as_json()
                | {"available": format_money(available), "in_stock": available >= line.quantity}
            )
        return {
            "user_id": self.user_id,
            "lines": lines,
            "total": format_money(total_of(self.lines)),
            "can_pay": bool(lines) and all(line["in_stock"] for line in lines),
        }


def _read_cart(session: Session, user_id: str) -> CartView:
    rows = CartRepository(session).lines(user_id)
    return CartView(
        user_id=user_id,
        lines=[LineView(r.item_id, r.name, r.quantity, r.price) for r in rows],
        available={r.item_id: r.stock for r in rows},
    )


def view_cart(shop: Shop, user_id: str) -> CartView:
    return shop.transaction(lambda session: _read_cart(session, user_id), "view_cart")


def add_to_cart_in(session: Session, user_id: str, item_id: int, quantity: int) -> CartView:
    """Add ``quantity`` of an item to the user's cart line (inside a transaction).

    Refuses (409) when the line would exceed the item's current stock. That is
    a plain read to give early feedback; the authoritative check is at pay.
    """
    line = CartRepository(session).add(user_id, item_id, quantity)
    if line is None:
        raise NotFound(f"item {item_id} does not exist")
    if line.quantity > line.stock:
        raise insufficient(
            [
                {
                    "item_id": item_id,
                    "name": line.name,
                    "requested": line.quantity,
                    "available": format_money(line.stock),
                }
            ]
        )
    return _read_cart(session, user_id)


def add_to_cart(shop: Shop, user_id: str, item_id: int, quantity: int) -> CartView:
    return shop.transaction(
        lambda session: add_to_cart_in(session, user_id, item_id, quantity), "add_to_cart"
    )


def remove_from_cart(shop: Shop, user_id: str, item_id: int) -> CartView:
    def work(session: Session) -> CartView:
        if not CartRepository(session).remove(user_id, item_id):
            raise NotFound(f"item {item_id} is not in the cart of {user_id}")
        return _read_cart(session, user_id)

    return shop.transaction(work, "remove_from_cart")
