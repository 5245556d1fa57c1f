"""Reading orders."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.repositories import OrderRepository
from ecommerce.services import Shop
from ecommerce.services.results import OrderView


def get_order(shop: Shop, order_id: int, owner: str | None = None) -> OrderView:
    """One order. With ``owner`` set, another user's order is reported as missing."""

    def work(session: Session) -> OrderView:
        order = OrderRepository(session).get(order_id)
        if order is None or (owner is not None and order.user_id != owner):
            raise NotFound(f"order {order_id} does not exist")
        return OrderView.of(order)

    return shop.transaction(work, "get_order")


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderView]
    next_before: int | None  # pass as ``before`` for the next page; None on the last one


def list_orders(shop: Shop, user_id: str, limit: int, before: int | None) -> OrderPage:
    def work(session: Session) -> list[OrderView]:
        return [OrderView.of(o) for o in OrderRepository(session).for_user(user_id, limit, before)]

    found = shop.transaction(work, "list_orders")
    return OrderPage(found, found[-1].order_id if len(found) == limit else None)
