"""Per-buyer limits under real concurrency: one buyer on many threads, adding and
paying at once, never holds more than the limit."""

from collections import Counter
from decimal import Decimal

from sqlalchemy import text

from ecommerce.errors import ShopError
from ecommerce.services import cart, payment
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_item,
    run_together,
    shop_state,
)


def test_one_buyer_on_many_threads_never_passes_the_limit(storm_shop, committed):
    shop = storm_shop(24)
    hot = commit_item(committed, "Limited", "1.00", 100)
    with committed.begin() as conn:
        conn.execute(text("UPDATE items SET per_user_limit = 3 WHERE id = :i"), {"i": hot})

    def greedy(through_the_shop: bool) -> list[str]:
        outcomes = []
        for _ in range(6):
            outcomes += fill_and_pay(through_the_shop)
        return outcomes

    def fill_and_pay(through_the_shop: bool) -> list[str]:
        outcomes = []
        if through_the_shop:  # the add's early check applies
            try:
                cart.add_to_cart(shop, "greedy", hot, 1)
                outcomes.append("added")
            except ShopError as refused:
                outcomes.append(refused.code)
        else:  # a cart filled behind that check: only the pay's check stands
            with committed.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO carts (user_id, item_id, quantity) VALUES ('greedy', :i, 1)"
                        " ON CONFLICT (user_id, item_id) DO NOTHING"
                    ),
                    {"i": hot},
                )
            outcomes.append("added")
        for _ in range(3):  # pay whatever the cart holds now
            total = cart.view_cart(shop, "greedy").total
            try:
                payment.pay(shop, "greedy", total)
                outcomes.append("paid")
                break
            except ShopError as refused:
                outcomes.append(refused.code)
        return outcomes

    results = run_together([lambda n=n: greedy(n % 2 == 0) for n in range(24)])

    assert all(isinstance(r, list) for r in results), [
        r for r in results if not isinstance(r, list)
    ]
    seen = Counter(code for r in results for code in r)
    assert set(seen) <= {"added", "paid", "limit_exceeded", "amount_mismatch", "empty_cart"}, seen
    assert seen["limit_exceeded"] > 0, seen
    with committed.connect() as conn:
        held = conn.execute(
            text(
                "SELECT coalesce(sum(l.quantity), 0) FROM orders o"
                " JOIN order_lines l ON l.order_id = o.id WHERE o.user_id = 'greedy'"
            )
        ).scalar_one()
    assert 1 <= held <= 3, (held, seen)
    after = shop_state(committed)
    assert after.stock[hot] == 100 - held
    assert_conserved({hot: Decimal(100)}, after)
    assert_invariants(committed)
