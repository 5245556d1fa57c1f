"""Combined pays under real concurrency: buyers released together by a barrier,
each on a thread of its own, land in shared batches; every buyer must get
exactly the answer they would get alone, and the books must balance."""

import threading
from decimal import Decimal

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ecommerce.errors import ShopError
from ecommerce.services import cart, payment
from ecommerce.services.results import OrderView
from tests.helpers import (
    BatchSizes,
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    queue_behind_a_held_batch,
    refused_by_the_database,
    run_together,
    set_sale_rules,
    shop_state,
    wait_until_a_backend_waits_on_a_lock,
)


@pytest.fixture
def batch_sizes() -> BatchSizes:
    """The size of every batch of pays the shop runs (attach it:
    ``shop.batch_observer = batch_sizes.record``)."""
    return BatchSizes(pay=[])


# These tests combine pays themselves: run once (not once per value of the
# pay_combining fixture, tests/concurrency/conftest.py).
ONLY_COMBINED = pytest.mark.parametrize("pay_combining", [True], ids=["combined"])


def answer(result):
    return result.code if isinstance(result, ShopError) else "paid"


@ONLY_COMBINED
def test_a_mixed_storm_every_buyer_gets_their_own_answer(storm_shop, committed, batch_sizes):
    shop = storm_shop(48, pay_combining=True)
    shop.batch_observer = batch_sizes.record
    hot = commit_item(committed, "Hot", "2.00", 7)
    side = commit_item(committed, "Side", "3.00", 100)
    buyers: dict[str, tuple[list[tuple[int, int]], Decimal, str | None]] = {}
    for n in range(24):  # one unit of the hot item each: 7 win, 17 are short
        buyers[f"hot{n}"] = ([(hot, 1)], Decimal("2.00"), None)
    for n in range(6):  # both items, added in crossed orders, right amount
        lines = [(hot, 1), (side, 2)] if n % 2 else [(side, 2), (hot, 1)]
        buyers[f"both{n}"] = (lines, Decimal("8.00"), None)
    for n in range(6):  # only the side item, wrong amount
        buyers[f"wrong{n}"] = ([(side, 1)], Decimal("2.99"), None)
    for n in range(4):  # nothing in the cart
        buyers[f"empty{n}"] = ([], Decimal("1.00"), None)
    for n in range(4):  # keyed buyers of the side item
        buyers[f"keyed{n}"] = ([(side, 3)], Decimal("9.00"), f"k-{n}")
    commit_cart_lines(
        committed, [(u, item, q) for u, (lines, _, _) in buyers.items() for item, q in lines]
    )
    # The same user twice (one cart: one order) and the same key twice (one effect).
    calls = [(u, amount, key) for u, (_, amount, key) in buyers.items()]
    calls += [("both0", Decimal("8.00"), None), ("keyed0", Decimal("9.00"), "k-0")]

    results = run_together([lambda c=c: payment.pay(shop, *c) for c in calls])

    by_user: dict[str, list[object]] = {}
    for (user, _, _), result in zip(calls, results, strict=True):
        assert isinstance(result, OrderView | ShopError), result
        by_user.setdefault(user, []).append(result)
        if isinstance(result, OrderView):  # never another buyer's order
            assert result.user_id == user
            wanted = sorted(buyers[user][0])
            assert sorted((ln.item_id, ln.quantity) for ln in result.lines) == wanted
    hot_winners = [u for u, rs in by_user.items() if any(isinstance(r, OrderView) for r in rs)]
    hot_buyers = [u for u in hot_winners if u.startswith(("hot", "both"))]
    assert len(hot_buyers) == 7, "exactly the stock of the hot item is sold"
    for user, rs in by_user.items():
        kinds = sorted(answer(r) for r in rs)
        if user.startswith("wrong"):
            assert kinds == ["amount_mismatch"]
        elif user.startswith("empty"):
            assert kinds == ["empty_cart"]
        elif user == "both0":
            assert kinds in (["empty_cart", "paid"], ["insufficient_stock"] * 2), kinds
        elif user == "keyed0":
            # The second with the same key: in flight (409) or a replay of the first.
            assert kinds in (["idempotency_key_in_use", "paid"], ["paid", "paid"]), kinds
        elif user.startswith("keyed"):
            assert kinds == ["paid"]
        else:
            assert kinds in (["paid"], ["insufficient_stock"])
    after = shop_state(committed)
    assert_conserved({hot: Decimal(7), side: Decimal(100)}, after)
    assert after.orders == len(hot_winners) == sum(after.orders_per_user.values())
    assert all(count == 1 for count in after.orders_per_user.values())
    assert after.idempotency_keys == 4
    assert_invariants(committed)
    assert max(batch_sizes["pay"]) > 1, "the buyers were combined into batches"


@ONLY_COMBINED
def test_buyers_refused_before_the_item_lock_draw_no_order_id(storm_shop, committed, batch_sizes):
    """A storm of buyers refused whatever the stock says (a wrong amount, an empty
    cart, a sale not yet open), pressing pay again and again in shared batches,
    with one buyer who pays: the orders' id sequence moves by that one order.
    Before, a batch drew an id for every buyer with a cart, so a client looping
    on 422 burned ids at the batches' pace."""
    shop = storm_shop(24, pay_combining=True)
    shop.batch_observer = batch_sizes.record
    item = commit_item(committed, "Item", "2.00", 100)
    early = commit_item(committed, "Early", "1.00", 100)
    with committed.begin() as conn:
        set_sale_rules(conn, early, starts_in_s=3600)
    buyers = {f"wrong{n}": (item, Decimal("3.00")) for n in range(10)}
    buyers |= {f"early{n}": (early, Decimal("1.00")) for n in range(10)}
    commit_cart_lines(committed, [(u, i, 1) for u, (i, _) in buyers.items()])
    buyers |= {f"empty{n}": (item, Decimal("2.00")) for n in range(3)}
    commit_cart_lines(committed, [("payer", item, 1)])
    buyers["payer"] = (item, Decimal("2.00"))
    before = _sequence_position(committed)

    answers = []
    for _ in range(3):
        results = run_together(
            [lambda u=u, a=a: payment.pay(shop, u, a) for u, (_, a) in buyers.items()]
        )
        answers += [(u, answer(r)) for u, r in zip(buyers, results, strict=True)]

    expected = {"wrong": "amount_mismatch", "early": "sale_not_started", "empty": "empty_cart"}
    for user, got in answers:
        if user != "payer":
            assert got == expected[user.rstrip("0123456789")], (user, got)
    assert [got for user, got in answers if user == "payer"] == ["paid", "empty_cart", "empty_cart"]
    assert _sequence_position(committed) == before + 1, "one id, for the one order"
    assert max(batch_sizes["pay"]) > 1, "the buyers were combined into batches"
    assert_invariants(committed)


@ONLY_COMBINED
def test_a_combiner_never_waits_for_the_pool_behind_requests(storm_shop, committed):
    """Request threads hold every pooled connection the pool will give (as a
    storm of reads would); a pay, an add and a cart read still go through,
    each combiner on the connection it keeps. Before, a batch waited for the
    pool like any request and, past DB_POOL_TIMEOUT_MS, failed whole (503)."""
    shop = storm_shop(4, pool_timeout_s=0.2, pay_combining=True, cart_combining=True)
    item = commit_item(committed, "Item", "2.00", 10)
    cart.add_to_cart(shop, "warm", item, 1)  # the combiners take their connections
    cart.view_cart(shop, "warm")
    payment.pay(shop, "warm", Decimal("2.00"))
    held = []
    with pytest.raises(sa_exc.TimeoutError):
        while True:
            held.append(shop.db.engine.connect())
    try:
        cart.add_to_cart(shop, "buyer", item, 2)
        assert cart.view_cart(shop, "buyer").total == Decimal("4.00")
        assert payment.pay(shop, "buyer", Decimal("4.00")).user_id == "buyer"
    finally:
        for connection in held:
            connection.close()
    assert shop_state(committed).stock[item] == 7
    assert_invariants(committed)


@ONLY_COMBINED
def test_a_combiners_connection_that_died_is_replaced(storm_shop, committed):
    """The database ends every connection of the shop (a restart, a failover):
    the next pay, add and cart read run on new ones, with no error."""
    shop = storm_shop(4, pay_combining=True, cart_combining=True)
    item = commit_item(committed, "Item", "2.00", 10)
    cart.add_to_cart(shop, "buyer", item, 1)
    assert cart.view_cart(shop, "buyer").total == Decimal("2.00")
    with committed.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'ecommerce' AND pid <> pg_backend_pid()"
                " AND datname = current_database()"
            )
        ).scalar_one()
    assert ended >= 2, "the combiners kept their connections"
    cart.add_to_cart(shop, "buyer", item, 1)
    assert cart.view_cart(shop, "buyer").total == Decimal("4.00")
    assert payment.pay(shop, "buyer", Decimal("4.00")).user_id == "buyer"
    assert_invariants(committed)


def _sequence_position(engine) -> int:
    """How many ids the orders' sequence has handed out (nextval is not undone by
    a rollback, so a refused buyer's drawn id shows here)."""
    with engine.connect() as conn:
        last, called = conn.execute(text("SELECT last_value, is_called FROM orders_id_seq")).one()
    return last if called else last - 1


@ONLY_COMBINED
def test_a_buyer_whose_write_fails_fails_no_other_buyer(storm_shop, committed, batch_sizes):
    """One buyer's order cannot be written (an unexpected error: PostgreSQL
    refuses it, by a trigger) in a batch of 21: the batch fails, its buyers are
    re-run one by one, and only that buyer gets the error; the others get
    exactly their answers."""
    shop = storm_shop(22, pay_combining=True)
    shop.batch_observer = batch_sizes.record
    hot = commit_item(committed, "Hot", "1.00", 5)
    side = commit_item(committed, "Side", "1.00", 100)
    users = [f"buyer{n}" for n in range(20)]
    lines = [(u, hot, 1) for u in users] + [("poison", side, 1), ("early", side, 1)]
    commit_cart_lines(committed, lines)

    def pay(user: str):
        return lambda: payment.pay(shop, user, Decimal("1.00"))

    with refused_by_the_database(committed, "orders", "poison"):
        results = queue_behind_a_held_batch(  # "early" alone first, held on the side item
            shop,
            "pay-combiner",
            committed,
            "SELECT 1 FROM items WHERE id = :i FOR UPDATE",
            pay("early"),
            [pay(u) for u in [*users, "poison"]],
            i=side,
        )

    # the batch of 21 failed on the poisoned order, then each ran alone
    assert batch_sizes["pay"] == [1, 21] + [1] * 21
    assert answer(results[0]) == "paid"
    assert isinstance(results[-1], DBAPIError), results[-1]
    assert "this row cannot be written" in str(results[-1])
    assert sorted(answer(r) for r in results[1:-1]) == ["insufficient_stock"] * 15 + ["paid"] * 5
    after = shop_state(committed)
    assert after.stock[hot] == 0 and after.stock[side] == 99 and after.orders == 6
    assert_conserved({hot: Decimal(5), side: Decimal(100)}, after)
    assert_invariants(committed)


@ONLY_COMBINED
def test_a_sold_out_item_is_refused_without_its_row_lock(storm_shop, committed):
    shop = storm_shop(4, pay_combining=True, sold_out_recheck_ms=60_000)
    hot = commit_item(committed, "Hot", "1.00", 1)
    commit_cart_lines(committed, [("first", hot, 1), ("late", hot, 1)])
    assert payment.pay(shop, "first", Decimal("1.00")).user_id == "first"

    # Someone holds the item row now; a buyer that needed its lock would wait 20 s.
    with committed.connect() as holder:
        from sqlalchemy import text

        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        with pytest.raises(ShopError) as refused:
            payment.pay(shop, "late", Decimal("1.00"))
        holder.rollback()
    assert refused.value.code == "insufficient_stock"
    assert refused.value.details["items"][0]["available"] == "0.00"


def test_after_a_sold_out_mark_its_buyers_are_refused_without_any_lock(
    storm_shop, committed, batch_sizes, pay_combining
):
    # lock_timeout 1 s: a buyer that waited on a held cart row would get 503 busy.
    shop = storm_shop(16, lock_timeout_ms=1000, sold_out_recheck_ms=60_000)
    shop.batch_observer = batch_sizes.record
    hot = commit_item(committed, "Hot", "1.00", 1)
    side = commit_item(committed, "Side", "2.00", 10)
    late = [f"late{n}" for n in range(8)]
    buyers = [f"side{n}" for n in range(6)]
    commit_cart_lines(
        committed,
        [("first", hot, 1), ("second", hot, 1), ("keyed", side, 1)]
        + [(u, hot, 1) for u in late]
        + [(u, side, 1) for u in buyers],
    )
    assert payment.pay(shop, "first", Decimal("1.00")).user_id == "first"  # hot: sold out
    with pytest.raises(ShopError):  # marks it, if the last sale did not (one pay alone)
        payment.pay(shop, "second", Decimal("1.00"))
    paid = payment.pay(shop, "keyed", Decimal("2.00"), "k-1")
    # The keyed buyer then puts the sold-out item in their cart and retries the pay:
    # the key still replays the first answer.
    commit_cart_lines(committed, [("keyed", hot, 1)])

    with committed.connect() as holder:
        from sqlalchemy import text

        # Hold every late buyer's cart rows and the hot item's row.
        holder.execute(text("SELECT 1 FROM carts WHERE user_id LIKE 'late%' FOR UPDATE"))
        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        calls = [(u, Decimal("1.00"), None) for u in late]
        calls += [(u, Decimal("2.00"), None) for u in buyers]
        calls += [("keyed", Decimal("2.00"), "k-1")]
        results = run_together([lambda c=c: payment.pay(shop, *c) for c in calls])
        holder.rollback()

    answers = {user: result for (user, _, _), result in zip(calls, results, strict=True)}
    for user in late:
        assert answer(answers[user]) == "insufficient_stock", answers[user]
        assert answers[user].details["items"] == [
            {"item_id": hot, "name": "Hot", "requested": 1, "available": "0.00"}
        ]
    for user in buyers:
        assert answers[user].user_id == user
    assert answers["keyed"].replayed and answers["keyed"].order_id == paid.order_id
    after = shop_state(committed)
    assert after.stock == {hot: 0, side: 10 - 1 - len(buyers)}
    assert after.orders == 2 + len(buyers)
    assert_invariants(committed)
    if pay_combining:
        assert max(batch_sizes["pay"]) > 1, "the buyers were combined into batches"


def test_a_price_changed_while_the_batch_waits_for_the_item_refuses_only_its_buyers(
    storm_shop, committed, pay_combining
):
    shop = storm_shop(12)
    hot = commit_item(committed, "Hot", "1.00", 10)
    side = commit_item(committed, "Side", "2.00", 10)
    hot_buyers = [f"hot{n}" for n in range(6)]
    side_buyers = [f"side{n}" for n in range(6)]
    commit_cart_lines(committed, [(u, hot, 1) for u in hot_buyers])
    commit_cart_lines(committed, [(u, side, 1) for u in side_buyers])
    calls = [(u, Decimal("1.00")) for u in hot_buyers] + [(u, Decimal("2.00")) for u in side_buyers]

    results: list[object] = []
    with committed.connect() as holder:
        from sqlalchemy import text

        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        storm = threading.Thread(
            target=lambda: results.extend(
                run_together([lambda c=c: payment.pay(shop, *c) for c in calls])
            )
        )
        storm.start()
        wait_until_a_backend_waits_on_a_lock(committed)  # carts read at 1.00, item awaited
        holder.execute(text("UPDATE items SET price = 1.50 WHERE id = :i"), {"i": hot})
        holder.commit()
        storm.join(60)
        assert not storm.is_alive()

    answers = {user: result for (user, _), result in zip(calls, results, strict=True)}
    hot_answers = [answer(answers[u]) for u in hot_buyers]
    # Inside a transaction that read the old price: 409 conflict; a transaction
    # that started after the change sees 1.50 and the amount is wrong.
    assert set(hot_answers) <= {"conflict", "amount_mismatch"}, hot_answers
    assert "conflict" in hot_answers
    for user in side_buyers:
        assert answers[user].user_id == user, answers[user]
    after = shop_state(committed)
    assert after.stock == {hot: 10, side: 10 - len(side_buyers)}
    assert after.orders == len(side_buyers)
    assert_invariants(committed)
