"""Combined pays under real concurrency: buyers released together by a barrier,
each on a thread of its own, land in shared batches; every buyer must get
exactly the answer they would get alone, and the books must balance."""

import threading
from decimal import Decimal

import pytest

from ecommerce.errors import ShopError
from ecommerce.repositories import OrderRepository
from ecommerce.services import payment
from ecommerce.services.results import OrderView
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_until_a_backend_waits_on_a_lock,
)


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """Records the size of every batch the combiner runs."""
    sizes: list[int] = []
    real = payment._pay_batch

    def recording(session, shop, batch):
        sizes.append(len(batch))
        return real(session, shop, batch)

    monkeypatch.setattr(payment, "_pay_batch", recording)
    return sizes


def answer(result):
    return result.code if isinstance(result, ShopError) else "paid"


@pytest.mark.parametrize("strategy", ["for_update", "atomic"])
def test_a_mixed_storm_every_buyer_gets_their_own_answer(
    storm_shop, committed, strategy, batch_sizes
):
    shop = storm_shop(48, stock_strategy=strategy, pay_combining=True)
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
    assert max(batch_sizes) > 1, "the buyers were combined into batches"


def test_a_batch_whose_write_fails_is_rerun_buyer_by_buyer(
    storm_shop, committed, batch_sizes, monkeypatch
):
    shop = storm_shop(20, pay_combining=True)
    hot = commit_item(committed, "Hot", "1.00", 5)
    users = [f"buyer{n}" for n in range(20)]
    commit_cart_lines(committed, [(u, hot, 1) for u in users])
    failed = []

    def failing_write(self, *args, **kwargs):
        failed.append(True)
        raise RuntimeError("the batch write failed")

    monkeypatch.setattr(OrderRepository, "write_paid_many", failing_write)

    results = run_together([lambda u=u: payment.pay(shop, u, Decimal("1.00")) for u in users])

    assert failed, "a batch write was attempted and failed"
    assert sorted(answer(r) for r in results) == ["insufficient_stock"] * 15 + ["paid"] * 5
    after = shop_state(committed)
    assert after.stock[hot] == 0 and after.orders == 5
    assert_conserved({hot: Decimal(5)}, after)
    assert_invariants(committed)


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
        assert max(batch_sizes) > 1, "the buyers were combined into batches"


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
