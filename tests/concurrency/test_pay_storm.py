"""Real concurrency: threads with their own connections, released together by a
barrier, against real PostgreSQL; invariants read from a separate connection."""

from decimal import Decimal

import pytest
from sqlalchemy import text

from ecommerce.errors import EmptyCart, InsufficientStock, ShopError
from ecommerce.services import cart, payment
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
)


def pay_all(shop, users, amount):
    return run_together([lambda u=u: payment.pay(shop, u, amount) for u in users])


def outcome_counts(results):
    counts: dict[str, int] = {}
    for r in results:
        key = r.code if isinstance(r, ShopError) else type(r).__name__
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_s_units_many_buyers_exactly_s_orders(storm_shop, committed):
    stock, buyers = 5, 40
    shop = storm_shop(buyers)
    hot = commit_item(committed, "Hot item", "9.99", stock)
    users = [f"buyer{n}" for n in range(buyers)]
    commit_cart_lines(committed, [(u, hot, 1) for u in users])

    results = pay_all(shop, users, Decimal("9.99"))

    counts = outcome_counts(results)
    assert counts == {"OrderView": stock, "insufficient_stock": buyers - stock}, counts
    after = shop_state(committed)
    assert after.orders == stock
    assert after.stock[hot] == 0
    assert after.sold[hot] == stock
    assert_conserved({hot: Decimal(stock)}, after)
    assert_invariants(committed)
    assert len({r.order_id for r in results if not isinstance(r, Exception)}) == stock


def test_mixed_quantities_never_oversell(storm_shop, committed):
    stock, buyers = 17, 30
    shop = storm_shop(buyers)
    hot = commit_item(committed, "Hot item", "1.00", stock)
    wants = {f"buyer{n}": 1 + n % 3 for n in range(buyers)}
    commit_cart_lines(committed, [(u, hot, q) for u, q in wants.items()])

    results = run_together(
        [lambda u=u, q=q: payment.pay(shop, u, Decimal(q)) for u, q in wants.items()]
    )

    assert all(not isinstance(r, Exception) or isinstance(r, InsufficientStock) for r in results)
    after = shop_state(committed)
    assert_conserved({hot: Decimal(stock)}, after)
    assert_invariants(committed)
    outcomes = list(zip(wants.values(), results, strict=True))
    sold = sum(q for q, r in outcomes if not isinstance(r, Exception))
    assert sold == after.sold[hot] <= stock
    # Every refused buyer was refused because what was left was less than they wanted.
    refused = [q for q, r in outcomes if isinstance(r, Exception)]
    assert all(q > after.stock[hot] for q in refused)


def test_opposite_item_orders_never_deadlock(storm_shop, committed):
    buyers = 24
    # No retries: a deadlock would surface as an error here instead of being hidden.
    shop = storm_shop(buyers, transaction_retries=0)
    a = commit_item(committed, "A", "1.00", 1000)
    b = commit_item(committed, "B", "2.00", 1000)
    users = [f"user{n}" for n in range(buyers)]
    # Half add A then B, half B then A, all at once.
    run_together(
        [
            lambda u=u, first=first, second=second: (
                cart.add_to_cart(shop, u, first, 1),
                cart.add_to_cart(shop, u, second, 1),
            )
            for u, (first, second) in zip(users, [(a, b), (b, a)] * (buyers // 2), strict=True)
        ]
    )

    results = pay_all(shop, users, Decimal("3.00"))

    assert outcome_counts(results) == {"OrderView": buyers}
    after = shop_state(committed)
    assert after.stock[a] == after.stock[b] == 1000 - buyers
    assert_conserved({a: Decimal(1000), b: Decimal(1000)}, after)
    assert_invariants(committed)


def test_one_cart_paid_many_times_at_once_makes_one_order(storm_shop, committed):
    attempts = 20
    shop = storm_shop(attempts)
    a = commit_item(committed, "A", "5.00", 100)
    commit_cart_lines(committed, [("impatient", a, 3)])

    results = pay_all(shop, ["impatient"] * attempts, Decimal("15.00"))

    assert outcome_counts(results) == {"OrderView": 1, "empty_cart": attempts - 1}
    assert all(isinstance(r, EmptyCart) for r in results if isinstance(r, Exception))
    after = shop_state(committed)
    assert after.orders == 1 and after.payments == 1
    assert after.stock[a] == 97
    assert_conserved({a: Decimal(100)}, after)
    assert_invariants(committed)


def test_concurrent_adds_to_one_line_never_exceed_stock(storm_shop, committed):
    adds = 20
    shop = storm_shop(adds)
    a = commit_item(committed, "A", "1.00", 5)

    results = run_together([lambda: cart.add_to_cart(shop, "u1", a, 1) for _ in range(adds)])

    assert outcome_counts(results) == {"CartView": 5, "insufficient_stock": 15}
    with committed.connect() as conn:
        quantity = conn.execute(
            text("SELECT quantity FROM carts WHERE user_id = 'u1'")
        ).scalar_one()
    assert quantity == 5


def test_checkout_lock_does_not_block_cart_inserts(committed):
    """FOR NO KEY UPDATE on an item lets a cart insert's foreign-key check (FOR KEY
    SHARE) through, but still excludes another writer (FOR UPDATE)."""
    from sqlalchemy.orm import Session

    from ecommerce.repositories import ItemRepository

    a = commit_item(committed, "A", "1.00", 5)
    with Session(committed) as holder, holder.begin():
        ItemRepository(holder).lock([a])
        with committed.connect() as other:
            other.execute(text("SET lock_timeout = '1s'"))
            other.execute(
                text("INSERT INTO carts (user_id, item_id, quantity) VALUES ('u9', :a, 1)"),
                {"a": a},
            )
            other.rollback()
            other.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(Exception, match="lock"):
                other.execute(text("SELECT 1 FROM items WHERE id = :a FOR UPDATE"), {"a": a})
            other.rollback()
