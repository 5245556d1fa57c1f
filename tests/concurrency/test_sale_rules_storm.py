"""Per-buyer limits under real concurrency: one buyer on many threads, adding and
paying at once, never holds more than the limit."""

import threading
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import text

from ecommerce.errors import ShopError
from ecommerce.services import cart, payment
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    set_sale_rules,
    shop_state,
    wait_until_a_backend_waits_on_a_lock,
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


@pytest.mark.parametrize("rule", ["sale_ended", "limit_exceeded", "sale_opened"])
def test_a_rule_changed_while_pays_wait_on_the_item_row_binds_them_all(
    rule, storm_shop, committed, pay_combining
):
    """An admin holds the hot row, closes the sale (or sets a limit, or opens the
    sale) at that instant and commits while pays queue on that row: every pay
    that commits afterwards obeys the new rule, on the combined path and alone
    (before a fix of the same day, a batch judged the window at the instant it
    started, before it waited for the row, and still sold after a close). Before the
    fix, pays alone judged the rules on the cart's plain read (taken before the
    item lock), and a batch chose which held units to count from it. A sale
    opened while they wait sells to all of them, alone too (a pay alone is a
    batch of one): the batch draws the order ids it did not draw for buyers the
    cart's read said were too early."""
    buyers = [f"b{n}" for n in range(8)]
    shop = storm_shop(len(buyers), combining_queue_wait_ms=60_000)
    hot = commit_item(committed, "Hot", "1.00", 100)
    commit_cart_lines(committed, [(b, hot, 1) for b in buyers])
    if rule == "sale_opened":
        with committed.begin() as conn:
            set_sale_rules(conn, hot, starts_in_s=3600)
    if rule == "limit_exceeded":
        for b in buyers:  # each buyer already holds one unit in a paid order
            payment.pay(shop, b, Decimal("1.00"))
        commit_cart_lines(committed, [(b, hot, 1) for b in buyers])

    admin = committed.connect()
    holder = admin.begin()
    admin.execute(text("SELECT id FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
    results: list = []
    threads = [
        threading.Thread(
            target=lambda b=b: results.append(
                _outcome(lambda: payment.pay(shop, b, Decimal("1.00")))
            )
        )
        for b in buyers
    ]
    for t in threads:
        t.start()
    # Alone, every pay waits on the row; combined, the batch's one transaction does.
    wait_until_a_backend_waits_on_a_lock(committed, count=1 if pay_combining else len(buyers))
    # The window moves at this instant (clock_timestamp(): not the holder's
    # transaction start), after the pays began: a pay judges it when it has the
    # row, not when it started.
    if rule == "sale_opened":
        admin.execute(
            text("UPDATE items SET sale_starts_at = clock_timestamp() WHERE id = :i"), {"i": hot}
        )
    elif rule == "sale_ended":
        admin.execute(
            text("UPDATE items SET sale_ends_at = clock_timestamp() WHERE id = :i"), {"i": hot}
        )
    else:
        admin.execute(text("UPDATE items SET per_user_limit = 1 WHERE id = :i"), {"i": hot})
    holder.commit()
    admin.close()
    for t in threads:
        t.join(60)
        assert not t.is_alive()

    expected = "paid" if rule == "sale_opened" else rule
    assert results == [expected] * len(buyers), results
    held = len(buyers) if rule in ("limit_exceeded", "sale_opened") else 0
    after = shop_state(committed)
    assert after.stock[hot] == 100 - held
    assert_conserved({hot: Decimal(100)}, after)
    assert_invariants(committed)


def _outcome(pay) -> str:
    try:
        pay()
    except ShopError as refused:
        return refused.code
    return "paid"
