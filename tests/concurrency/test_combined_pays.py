"""Combined pays under real concurrency: buyers released together by a barrier,
each on a thread of its own, land in shared batches; every buyer must get
exactly the answer they would get alone, and the books must balance."""

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
