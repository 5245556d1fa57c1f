"""The negative control: the shop with the 12.12 bug put back, from outside.

:func:`pay` is the pay of the design note's failure: one transaction per buyer
and every read plain. It reads the cart with each item's stock (no lock), judges
the buyer on that read, writes the order, then writes the stock back as an
absolute value (``stock = what I read - what I took``). Two buyers who read the
same stock both pass and both write the same value: units are sold twice and
the stock no longer adds up, which the invariant checks name.

The shop itself knows nothing of it: ``ecommerce.flashsale.naive_app`` builds
the app with it as the pay its endpoint runs (``create_app(pay_engine=...)``,
the shop's one seam for it). The simulator runs it to show that its checks can
fail; nothing else should.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.domain import checkout
from ecommerce.models import ORDER_STATUS_PAID
from ecommerce.repositories import CartRepository, NewOrder, NewOrderLine, OrderRepository
from ecommerce.services import Shop
from ecommerce.services.results import LineView, OrderView, total_of

OVERWRITE_STOCK = text("UPDATE items SET stock = :stock WHERE id = :item_id")


def pay(
    shop: Shop,
    user_id: str,
    amount: Decimal,
    idempotency_key: str | None = None,
    admission_tokens: Sequence[str] = (),
) -> OrderView:
    """UNSAFE: the read-then-write that oversold (the key and the admission
    tokens are ignored). The shop's PayEngine, as the endpoint calls it."""

    def work(session: Session) -> OrderView:
        cart = CartRepository(session).lines(user_id)  # a plain read, stock included
        buyer = checkout.Buyer(user_id, amount, cart)
        created_at = shop.clock()
        refused = checkout.refusal(buyer, {ln.item_id: ln.stock for ln in cart}, None, created_at)
        if refused is not None:
            raise refused
        orders = OrderRepository(session)
        (order_id,) = orders.next_ids(1)
        lines = [LineView(ln.item_id, ln.name, ln.quantity, ln.price) for ln in cart]
        new_lines = [NewOrderLine(ln.item_id, ln.quantity, ln.price) for ln in cart]
        orders.write_paid(
            [NewOrder(order_id, user_id, total_of(lines), new_lines)], [], 0, {}, created_at
        )
        for line in cart:  # the bug: an absolute value computed from the plain read
            session.execute(
                OVERWRITE_STOCK, {"stock": line.stock - line.quantity, "item_id": line.item_id}
            )
        return OrderView(order_id, user_id, ORDER_STATUS_PAID, total_of(lines), created_at, lines)

    return shop.transaction(work, "naive_pay")
