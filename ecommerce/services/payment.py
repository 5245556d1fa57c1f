"""Paying for a cart: the transaction that must never oversell.

All or nothing, in one database transaction:
1. lock the user's cart rows (FOR UPDATE): a second pay of the same cart waits
   here, then finds the cart empty;
2. take the stock through the configured strategy, which locks the item rows in
   ascending id order and refuses if any line is short (naming every short item);
3. refuse unless the amount is exactly the total;
4. write the order, its lines and its payment, delete the paid cart lines;
5. commit, which releases the locks.
No network call happens while the locks are held.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.errors import AmountMismatch, EmptyCart, OrderTooLarge
from ecommerce.models import ORDER_STATUS_PAID
from ecommerce.money import MAX_AMOUNT, format_money
from ecommerce.repositories import CartRepository, NewOrderLine, OrderRepository
from ecommerce.services import Shop
from ecommerce.services.views import LineView, OrderView, total_of


def pay_in(session: Session, shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    """The pay, inside the caller's transaction (see the module docstring)."""
    carts = CartRepository(session)
    wanted = carts.lock_lines(user_id)
    if not wanted:
        raise EmptyCart(f"the cart of {user_id} is empty")

    taken = shop.stock.take(session, wanted)
    if shop.after_stock_taken is not None:
        shop.after_stock_taken(user_id)
    lines = [
        LineView(item_id, taken[item_id].name, quantity, taken[item_id].price)
        for item_id, quantity in wanted.items()
    ]
    total = total_of(lines)
    if total > MAX_AMOUNT:
        raise OrderTooLarge(f"the order total {format_money(total)} exceeds {MAX_AMOUNT}")
    if amount != total:
        raise AmountMismatch(
            f"the amount must be exactly the cart total {format_money(total)}",
            details={"expected": format_money(total), "received": format_money(amount)},
        )

    order_id, created_at = OrderRepository(session).create_paid(
        user_id,
        total,
        [NewOrderLine(line.item_id, line.quantity, line.unit_price) for line in lines],
        amount,
    )
    carts.remove_lines(user_id, wanted)
    return OrderView(order_id, user_id, ORDER_STATUS_PAID, total, created_at, lines)


def pay(shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    return shop.transaction(lambda session: pay_in(session, shop, user_id, amount), "pay")
