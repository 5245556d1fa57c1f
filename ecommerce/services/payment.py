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
are held.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.errors import AmountMismatch, EmptyCart, OrderTooLarge
from ecommerce.models import ORDER_STATUS_PAID
from ecommerce.money import MAX_AMOUNT, format_money
from ecommerce.repositories import CartRepository, ItemRepository, NewOrderLine, OrderRepository
from ecommerce.services import Shop
from ecommerce.services.stock import insufficient, shortages
from ecommerce.services.views import LineView, OrderView, total_of


def pay_in(session: Session, shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    """The pay, inside the caller's transaction (see the module docstring)."""
    cart = CartRepository(session).lock_for_pay(user_id)
    if not cart:
        raise EmptyCart(f"the cart of {user_id} is empty")
    wanted = {line.item_id: line.quantity for line in cart}
    lines = [LineView(line.item_id, line.name, line.quantity, line.price) for line in cart]
    total = total_of(lines)
    if total > MAX_AMOUNT:
        raise OrderTooLarge(f"the order total {format_money(total)} exceeds {MAX_AMOUNT}")
    if amount != total:
        # Short stock is the more useful answer; a plain read is enough to refuse.
        short = shortages(ItemRepository(session).read(wanted), wanted)
        if short:
            raise insufficient(short)
        raise AmountMismatch(
            f"the amount must be exactly the cart total {format_money(total)}",
            details={"expected": format_money(total), "received": format_money(amount)},
        )

    order_id, created_at = OrderRepository(session).write_paid(
        user_id,
        total,
        amount,
        [NewOrderLine(line.item_id, line.quantity, line.unit_price) for line in lines],
    )
    shop.stock.take(session, wanted, {line.item_id: line.price for line in cart})
    if shop.after_stock_taken is not None:
        shop.after_stock_taken(user_id)
    return OrderView(order_id, user_id, ORDER_STATUS_PAID, total, created_at, lines)


def pay(shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    return shop.transaction(lambda session: pay_in(session, shop, user_id, amount), "pay")
