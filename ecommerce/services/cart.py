"""Cart use cases: add, remove, view (also the read-only checkout quote)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.repositories import CartRepository, OrderRepository
from ecommerce.services import Shop, idempotency, rules
from ecommerce.services.results import CartView, LineView
from ecommerce.services.stock import insufficient, shortage


def _read_cart(session: Session, user_id: str) -> CartView:
    rows = CartRepository(session).lines(user_id)
    at = rules.now()
    return CartView(
        user_id=user_id,
        lines=[LineView(r.item_id, r.name, r.quantity, r.price) for r in rows],
        available={r.item_id: r.stock for r in rows},
        off_sale=frozenset(r.item_id for r in rows if not rules.on_sale(r, at)),
    )


def view_cart(shop: Shop, user_id: str) -> CartView:
    return shop.transaction(lambda session: _read_cart(session, user_id), "view_cart")


def add_to_cart(
    shop: Shop, user_id: str, item_id: int, quantity: int, idempotency_key: str | None = None
) -> CartView:
    """Add ``quantity`` of an item to the user's cart line; returns the cart.

    Refuses when the line would take the buyer past the item's per-buyer limit
    (counting their orders) or exceed its current stock. Both are plain reads,
    early feedback; the authoritative checks are at pay. Adding before the
    sale opens is allowed.
    """

    def add(session: Session) -> CartView:
        line = CartRepository(session).add(user_id, item_id, quantity)
        if line is None:
            raise NotFound(f"item {item_id} does not exist")
        if line.per_user_limit is not None:
            held = OrderRepository(session).held_units([user_id], [item_id])
            refusal = rules.limit_refusal(
                item_id,
                line.name,
                line.per_user_limit,
                held.get((user_id, item_id), 0),
                line.quantity,
            )
            if refusal is not None:
                raise refusal
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
