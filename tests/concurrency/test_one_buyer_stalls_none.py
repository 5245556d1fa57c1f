"""One buyer cannot stall or fail a batch of others: not by a cart row that
another transaction holds (the same buyer paying from a second worker, say), nor
by adds whose numbers overflow the batch's statement. Real threads queued
behind a held batch so that they form the next one together, real PostgreSQL,
rows held from a separate connection.

Before the fix, the batch's cart lock waited for the held row: every buyer of
the batch waited LOCK_TIMEOUT_MS and was answered 503 (10 of 10 here); and 30
adds of 99,999,999 units to one line overflowed the batch's integer array, so
the batch failed and every add in it was run again alone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from ecommerce.errors import InsufficientStock, ServiceBusy
from ecommerce.limits import MAX_QUANTITY
from ecommerce.services import cart, payment
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    held_by_another_transaction,
    shop_state,
    wait_for,
    wait_until_a_backend_waits_on_a_lock,
)

ONLY_COMBINED = pytest.mark.parametrize("pay_combining", [True], ids=["combined"])


def start(work: Callable[[], Any], results: dict[int, Any], index: int) -> threading.Thread:
    def run() -> None:
        try:
            results[index] = work()
        except BaseException as error:  # handed to the test
            results[index] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def queued(shop, combiner: str) -> int:
    """How many requests wait in the combiner's queue (observable state)."""
    return shop.waiting_in(combiner)


@ONLY_COMBINED
def test_a_buyer_whose_cart_row_is_held_stalls_no_other_buyer(storm_shop, committed):
    shop = storm_shop(16, lock_timeout_ms=5000)
    hot = commit_item(committed, "Hot", "1.00", 100)
    side = commit_item(committed, "Side", "1.00", 100)
    users = [f"buyer{n}" for n in range(10)]
    commit_cart_lines(
        committed, [(u, hot, 1) for u in users] + [("stuck", hot, 1), ("early", side, 1)]
    )
    results: dict[int, Any] = {}

    with held_by_another_transaction(
        committed, "SELECT 1 FROM carts WHERE user_id = 'stuck' FOR UPDATE"
    ):
        # A first batch waits for the side item's row, so the rest queue behind it.
        with held_by_another_transaction(
            committed, "SELECT 1 FROM items WHERE id = :i FOR UPDATE", i=side
        ):
            first = start(lambda: payment.pay(shop, "early", Decimal("1.00")), results, -1)
            wait_until_a_backend_waits_on_a_lock(committed)
            threads = [
                start(lambda u=u: payment.pay(shop, u, Decimal("1.00")), results, n)
                for n, u in enumerate([*users, "stuck"])
            ]
            wait_for(lambda: queued(shop, "pay-combiner") == len(threads), what="for the queue")
        # The ten buyers are answered while the stuck buyer's cart row is still held.
        wait_for(lambda: all(n in results for n in range(len(users))), timeout=10)
        stuck_answered_early = len(users) in results
    for thread in [first, *threads]:
        thread.join(30)

    busy = [r for n, r in results.items() if n < len(users) and isinstance(r, ServiceBusy)]
    assert not busy, f"{len(busy)} of {len(users)} buyers were answered 503"
    assert [results[n].status for n in range(len(users))] == ["paid"] * len(users)
    assert not stuck_answered_early  # its own pay waited for its own row, alone
    assert results[len(users)].status == "paid"  # then went through once the row was free
    after = shop_state(committed)
    assert after.stock[hot] == 100 - len(users) - 1
    assert_conserved({hot: Decimal(100), side: Decimal(100)}, after)
    assert_invariants(committed)


@ONLY_COMBINED
def test_huge_adds_to_one_line_fail_no_batch(storm_shop, committed, caplog):
    shop = storm_shop(48, lock_timeout_ms=5000)
    hot = commit_item(committed, "Hot", "1.00", 10)
    side = commit_item(committed, "Side", "1.00", 10)
    commit_cart_lines(committed, [("early", side, 1)])
    users = [f"buyer{n}" for n in range(10)]
    requests = [("bot", MAX_QUANTITY)] * 30 + [(u, 1) for u in users]
    results: dict[int, Any] = {}

    caplog.set_level(logging.ERROR, logger="ecommerce.services.combining")
    with held_by_another_transaction(
        committed, "SELECT 1 FROM carts WHERE user_id = 'early' FOR UPDATE"
    ):
        first = start(lambda: cart.add_to_cart(shop, "early", side, 1), results, -1)
        wait_until_a_backend_waits_on_a_lock(committed)
        threads = [
            start(lambda u=u, q=q: cart.add_to_cart(shop, u, hot, q), results, n)
            for n, (u, q) in enumerate(requests)
        ]
        wait_for(lambda: queued(shop, "cart-adder") == len(threads), what="for the queue")
    for thread in [first, *threads]:
        thread.join(30)

    assert not [r.message for r in caplog.records if "failed" in r.message]
    bot = [results[n] for n, (user, _) in enumerate(requests) if user == "bot"]
    assert all(isinstance(r, InsufficientStock) for r in bot), bot
    others = [results[n] for n, (user, _) in enumerate(requests) if user != "bot"]
    assert [[(ln.item_id, ln.quantity) for ln in r.lines] for r in others] == [[(hot, 1)]] * 10
    with committed.connect() as conn:
        bot_lines = conn.execute(text("SELECT count(*) FROM carts WHERE user_id = 'bot'"))
        assert bot_lines.scalar_one() == 0  # every refused unit came out again
