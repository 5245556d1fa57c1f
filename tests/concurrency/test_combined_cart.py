"""Combined adds and cart reads under real concurrency: requests released
together by a barrier, each on a thread of its own, land in shared batches;
every buyer must get exactly the answer they would get alone, and the carts
must hold exactly what the accepted adds put there (read from a separate
connection). Each test also runs with cart combining off, the same checks."""

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ecommerce.errors import ShopError
from ecommerce.services import cart, payment
from ecommerce.services.results import CartView, OrderView
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
)


@pytest.fixture(params=[True, False], ids=["carts-combined", "carts-alone"])
def cart_combining(request) -> bool:
    return request.param


@pytest.fixture
def batch_sizes() -> BatchSizes:
    """The size of every batch of adds and of reads the shop runs (attach it:
    ``shop.batch_observer = batch_sizes.record``)."""
    return BatchSizes(add=[], read=[])


def carts_now(engine) -> dict[tuple[str, int], int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, item_id, quantity FROM carts"))
        return {(user, item): quantity for user, item, quantity in rows}


def code(result: object) -> str:
    return result.code if isinstance(result, ShopError) else "ok"


def line_quantity(view: CartView, item_id: int) -> int | None:
    return next((line.quantity for line in view.lines if line.item_id == item_id), None)


def test_a_mixed_storm_of_adds_every_buyer_gets_their_own_answer(
    storm_shop, committed, cart_combining, batch_sizes
):
    shop = storm_shop(40, cart_combining=cart_combining)
    shop.batch_observer = batch_sizes.record
    hot = commit_item(committed, "Hot", "1.00", 5)
    plain = commit_item(committed, "Plain", "2.00", 100)
    limited = commit_item(committed, "Limited", "3.00", 100)
    with committed.begin() as conn:
        set_sale_rules(conn, limited, per_user_limit=2)
    commit_cart_lines(committed, [("returning", plain, 4)])  # a line from before
    missing = hot + plain + limited  # no item has this id

    calls: list[tuple[str, int, int, str | None]] = []
    calls += [(f"hot{n}", hot, 1, None) for n in range(16)]  # 1 <= stock 5: all accepted
    calls += [(f"big{n}", hot, 6, None) for n in range(4)]  # 6 > stock 5: refused
    calls += [("twice", plain, 1, None), ("twice", plain, 2, None), ("twice", limited, 1, None)]
    calls += [("limit", limited, 2, None), ("limit", limited, 2, None)]  # one fits the limit
    calls += [(f"ghost{n}", missing, 1, None) for n in range(3)]
    calls += [("keyed", plain, 1, "k-1"), ("keyed", plain, 1, "k-1")]  # one effect
    calls += [("returning", plain, 1, None)]

    results = run_together([lambda c=c: cart.add_to_cart(shop, *c) for c in calls])

    answers: dict[str, list[object]] = {}
    for (user, item, quantity, _), result in zip(calls, results, strict=True):
        assert isinstance(result, CartView | ShopError), result
        answers.setdefault(user, []).append(result)
        if isinstance(result, CartView):  # never another buyer's cart
            assert result.user_id == user
            assert (line_quantity(result, item) or 0) >= quantity
    for n in range(16):
        [view] = answers[f"hot{n}"]
        assert [(ln.item_id, ln.quantity) for ln in view.lines] == [(hot, 1)]
        assert view.available == {hot: Decimal(5)}
    for n in range(4):
        [refused] = answers[f"big{n}"]
        assert code(refused) == "insufficient_stock"
        assert refused.details["items"] == [
            {"item_id": hot, "name": "Hot", "requested": 6, "available": "5.00"}
        ]
    # The same user three times: each answer shows only the adds up to its own.
    plain_seen = sorted(line_quantity(v, plain) for v in answers["twice"][:2])
    assert plain_seen in ([1, 3], [2, 3]), plain_seen
    assert sorted(code(r) for r in answers["limit"]) == ["limit_exceeded", "ok"]
    assert all(code(r) == "not_found" for n in range(3) for r in answers[f"ghost{n}"])
    keyed = sorted(code(r) for r in answers["keyed"])
    assert keyed == ["idempotency_key_in_use", "ok"] or (
        keyed == ["ok", "ok"] and any(v.replayed for v in answers["keyed"])
    ), answers["keyed"]
    [returning] = answers["returning"]
    assert line_quantity(returning, plain) == 5

    expected = {(f"hot{n}", hot): 1 for n in range(16)}
    expected |= {("twice", plain): 3, ("twice", limited): 1, ("limit", limited): 2}
    expected |= {("keyed", plain): 1, ("returning", plain): 5}
    assert carts_now(committed) == expected
    assert shop_state(committed).idempotency_keys == 1
    if cart_combining:
        assert max(batch_sizes["add"]) > 1, "the adds were combined into batches"
    else:
        assert set(batch_sizes["add"]) == {1}, "each add alone: a batch of one"


def test_concurrent_cart_reads_each_get_their_own_cart(
    storm_shop, committed, cart_combining, batch_sizes
):
    shop = storm_shop(32, cart_combining=cart_combining)
    shop.batch_observer = batch_sizes.record
    item = commit_item(committed, "Plain", "2.00", 100)
    other = commit_item(committed, "Other", "1.00", 3)
    users = [f"u{n}" for n in range(30)]
    commit_cart_lines(committed, [(u, item, n + 1) for n, u in enumerate(users)])
    commit_cart_lines(committed, [(u, other, 1) for u in users[::3]])
    calls = users + users[:5] + ["nobody"]  # some read twice; one has no cart

    results = run_together([lambda u=u: cart.view_cart(shop, u) for u in calls])

    for user, view in zip(calls, results, strict=True):
        assert isinstance(view, CartView), view
        assert view.user_id == user
        if user == "nobody":
            assert view.lines == [] and not view.can_pay
            continue
        n = users.index(user)
        wanted = [(item, n + 1)] + ([(other, 1)] if n % 3 == 0 else [])
        assert [(ln.item_id, ln.quantity) for ln in view.lines] == wanted
        assert view.total == Decimal("2.00") * (n + 1) + (Decimal("1.00") if n % 3 == 0 else 0)
    if cart_combining:
        assert max(batch_sizes["read"]) > 1, "the reads were combined into batches"


def test_an_add_whose_write_fails_fails_no_other_add(storm_shop, committed, batch_sizes):
    """One buyer's add cannot be written (an unexpected error: PostgreSQL
    refuses it, by a trigger) in a batch of 21: the batch fails, its adds are
    re-run one by one, and only that add gets the error; the others get exactly
    their answers."""
    shop = storm_shop(22, cart_combining=True)
    shop.batch_observer = batch_sizes.record
    hot = commit_item(committed, "Hot", "1.00", 5)
    calls = [(f"u{n}", hot, 1 + n % 7, None) for n in range(20)] + [("poison", hot, 1, None)]

    def add(call):
        return lambda: cart.add_to_cart(shop, *call)

    with refused_by_the_database(committed, "carts", "poison"):
        results = queue_behind_a_held_batch(  # "early" alone first, held on the item
            shop,
            "cart-adder",
            committed,
            "SELECT 1 FROM items WHERE id = :i FOR UPDATE",
            add(("early", hot, 1, None)),
            [add(c) for c in calls],
            i=hot,
        )

    # the batch of 21 failed on the poisoned add, then each ran alone
    assert batch_sizes["add"] == [1, 21] + [1] * 21
    assert line_quantity(results[0], hot) == 1
    assert isinstance(results[-1], DBAPIError), results[-1]
    assert "this row cannot be written" in str(results[-1])
    for (user, _, quantity, _), result in zip(calls[:-1], results[1:-1], strict=True):
        if quantity <= 5:
            assert isinstance(result, CartView) and result.user_id == user
            assert line_quantity(result, hot) == quantity
        else:
            assert code(result) == "insufficient_stock"
    expected = {(u, hot): q for u, _, q, _ in calls[:-1] if q <= 5} | {("early", hot): 1}
    assert carts_now(committed) == expected


def test_a_storm_of_whole_buyers_sells_exactly_the_stock(
    storm_shop, committed, cart_combining, pay_combining
):
    """Each buyer adds, reads the quote, then pays, on a thread of its own; adds,
    reads and pays of different buyers share batches."""
    shop = storm_shop(32, cart_combining=cart_combining)
    hot = commit_item(committed, "Hot", "1.00", 10)
    users = [f"buyer{n}" for n in range(30)]

    added: set[str] = set()

    def buyer(user: str) -> object:
        # A late add may already find the item sold out (409): that buyer stops.
        cart.add_to_cart(shop, user, hot, 1)
        added.add(user)
        quote = cart.view_cart(shop, user)
        assert quote.user_id == user and quote.total == Decimal("1.00")
        return payment.pay(shop, user, quote.total)

    results = run_together([lambda u=u: buyer(u) for u in users])

    winners = [u for u, r in zip(users, results, strict=True) if isinstance(r, OrderView)]
    assert all(isinstance(r, OrderView) or code(r) == "insufficient_stock" for r in results)
    assert len(winners) == 10, results
    assert all(r.user_id == u for u, r in zip(users, results, strict=True) if u in winners)
    after = shop_state(committed)
    assert_conserved({hot: Decimal(10)}, after)
    # Winners' carts are paid and gone; the other buyers who added still hold their line.
    assert after.carts == {(u, hot): 1 for u in added if u not in winners}
    assert_invariants(committed)


def test_huge_adds_of_one_line_are_refused_and_change_nothing(
    storm_shop, committed, cart_combining
):
    # Thirty adds of the largest quantity to one line: combined, their sum is past
    # what a cart line can hold, so the batch fails and each add runs alone; every
    # buyer gets the answer an add alone gets (more than the stock), nothing is written.
    shop = storm_shop(32, cart_combining=cart_combining)
    item = commit_item(committed, "Plain", "1.00", 100)
    calls = [("greedy", item, 99_999_999, None)] * 30

    results = run_together([lambda c=c: cart.add_to_cart(shop, *c) for c in calls])

    assert [code(r) for r in results] == ["insufficient_stock"] * 30, results
    assert all(r.details["items"][0]["requested"] == 99_999_999 for r in results)
    assert carts_now(committed) == {}
