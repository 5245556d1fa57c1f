"""Cart use cases: add, remove, view (also the read-only checkout quote)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.repositories import CartRepository
from ecommerce.services import Shop, idempotency
from ecommerce.services.results import CartView, LineView
from ecommerce.services.stock import insufficient, shortage


def _read_cart(session: Session, user_id: str) -> CartView:
    rows = CartRepository(session).lines(user_id)
    return CartView(
        user_id=user_id,
        lines=[LineView(r.item_id, r.name, r.quantity, r.price) for r in rows],
        available={r.item_id: r.stock for r in rows},
    )


def view_cart(shop: Shop, user_id: str) -> CartView:
    return shop.transaction(lambda session: _read_cart(session, user_id), "view_cart")


def add_to_cart(
    shop: Shop, user_id: str, item_id: int, quantity: int, idempotency_key: str | None = None
) -> CartView:
    """Add ``quantity`` of an item to the user's cart line; returns the cart.

    Refuses when the line would exceed the item's current stock. That is a plain
    read to give early feedback; the authoritative check is at pay.
    """

    def add(session: Session) -> CartView:
        line = CartRepository(session).add(user_id, item_id, quantity)
        if line is None:
            raise NotFound(f"item {item_id} does not exist")
        if line.quantity > line.stock:
            raise insufficient([shortage(item_id, line.name, line.quantity, line.stock)])
        return _read_cart(session, user_id)

    return idempotency.run_once(
        shop,
        "add_to_cart",
        user_id=user_id,
        key=idempotency_key,
        arguments={"item_id": item_id, "quantity": quantity},
        effect=add,
        decode=CartView.decode,
    )


def remove_from_cart(shop: Shop, user_id: str, item_id: int) -> CartView:
    def work(session: Session) -> CartView:
        if not CartRepository(session).remove(user_id, item_id):
            raise NotFound(f"item {item_id} is not in the cart of {user_id}")
        return _read_cart(session, user_id)

    return shop.transaction(work, "remove_from_cart")
