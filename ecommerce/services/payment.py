"""Paying for a cart: the transaction that must never oversell.

All or nothing, in one database transaction:
1. lock the user's cart rows (FOR UPDATE OF carts) and read their prices: a
   second pay of the same cart waits here, then finds the cart empty;
2. refuse unless the amount is exactly the total (reporting short stock first);
3. write the order, its lines and its payment, and delete the paid cart lines,
   in one statement;
4. take the stock through the configured strategy: it locks the item rows in
   ascending id order and refuses, naming every short item, if any line is
   short; a refusal rolls back everything above;
5. commit, which releases the locks.
Item rows are locked last, so a hot item is held only for the stock statements
and the commit, not for the order writes. No network call happens while locks
are held. With an Idempotency-Key the key is checked and stored in the same
transaction (ecommerce/services/idempotency.py).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.errors import AmountMismatch, EmptyCart, OrderTooLarge
from ecommerce.limits import MAX_AMOUNT
from ecommerce.models import ORDER_STATUS_PAID
from ecommerce.money import format_money
from ecommerce.repositories import CartRepository, NewOrderLine, OrderRepository
from ecommerce.services import Shop, idempotency
from ecommerce.services.results import LineView, OrderView, total_of
from ecommerce.services.stock import cart_shortages, insufficient


def pay(shop: Shop, user_id: str, amount: Decimal, idempotency_key: str | None = None) -> OrderView:
    """Pay exactly ``amount`` for the user's whole cart; returns the paid order."""
    return idempotency.run_once(
        shop,
        "pay",
        user_id=user_id,
        key=idempotency_key,
        arguments={"amount": format_money(amount)},
        effect=lambda session: _pay(session, shop, user_id, amount),
        decode=OrderView.decode,
    )


def amount_mismatch(total: Decimal, amount: Decimal) -> AmountMismatch:
    return AmountMismatch(
        f"the amount must be exactly the cart total {format_money(total)}",
        details={"expected": format_money(total), "received": format_money(amount)},
    )


def order_too_large(total: Decimal) -> OrderTooLarge:
    return OrderTooLarge(f"the order total {format_money(total)} exceeds {MAX_AMOUNT}")


def empty_cart(user_id: str) -> EmptyCart:
    return EmptyCart(f"the cart of {user_id} is empty")


def _pay(session: Session, shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    cart = CartRepository(session).lock_for_pay(user_id)
    if not cart:
        raise empty_cart(user_id)
    wanted = {line.item_id: line.quantity for line in cart}
    lines = [LineView(line.item_id, line.name, line.quantity, line.price) for line in cart]
    total = total_of(lines)
    if total > MAX_AMOUNT:
        raise order_too_large(total)
    if amount != total:
        # Short stock is the more useful answer; the stock read with the cart
        # (a plain read) is enough to refuse.
        short = cart_shortages(cart)
        if short:
            raise insufficient(short)
        raise amount_mismatch(total, amount)

    order_id, created_at = OrderRepository(session).write_paid(
        user_id,
        total,
        amount,
        [NewOrderLine(line.item_id, line.quantity, line.unit_price) for line in lines],
    )
    shop.stock.take(session, wanted, {line.item_id: line.price for line in cart})
    return OrderView(order_id, user_id, ORDER_STATUS_PAID, total, created_at, lines)
