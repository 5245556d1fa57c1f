"""Ending one order from many threads at once (buyer cancels, admin refunds),
while other buyers keep paying for the same item: one final state, the stock
given back exactly once, the books balanced."""

from decimal import Decimal

from sqlalchemy import text

from ecommerce.errors import ShopError
from ecommerce.services import orders, payment
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
)


def test_many_ends_of_one_order_give_its_stock_back_once(storm_shop, committed):
    shop = storm_shop(24)
    hot = commit_item(committed, "Hot", "2.00", 10)
    commit_cart_lines(committed, [("first", hot, 3)])
    order = payment.pay(shop, "first", Decimal("6.00"))
    buyers = [f"b{n}" for n in range(12)]
    commit_cart_lines(committed, [(u, hot, 1) for u in buyers])

    ends = [lambda: orders.cancel_order(shop, order.order_id, "first")] * 6
    ends += [lambda: orders.refund_order(shop, order.order_id)] * 6
    pays = [lambda u=u: payment.pay(shop, u, Decimal("2.00")) for u in buyers]
    results = run_together(ends + pays)

    ended = results[: len(ends)]
    assert all(getattr(r, "status", None) == "refunded" for r in ended), ended
    paid = [r for r in results[len(ends) :] if not isinstance(r, ShopError)]
    refused = [r for r in results[len(ends) :] if isinstance(r, ShopError)]
    assert all(r.code == "insufficient_stock" for r in refused), refused
    with committed.connect() as conn:
        refunds = conn.execute(text("SELECT count(*) FROM refunds")).scalar_one()
        returns = conn.execute(
            text("SELECT coalesce(sum(quantity), 0) FROM stock_movements WHERE reason = 'refund'")
        ).scalar_one()
    assert refunds == 1 and returns == 3
    after = shop_state(committed)
    # 7 units left after the first order; its 3 come back once, at some point
    # of the storm: 7 to 10 of the 12 buyers pay, and stock is what they left.
    assert 7 <= len(paid) <= 10 and after.stock[hot] == 10 - len(paid)
    assert_conserved({hot: Decimal(10)}, after)
    assert_invariants(committed)
