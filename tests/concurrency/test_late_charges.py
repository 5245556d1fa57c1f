"""Money kept = orders paid, whatever the timing of the provider, the buyer and
the cron lines: a charge that succeeds after the shop stopped waiting is never
kept for an order that no longer exists. Real threads, the fake provider (which
can tell what it kept), real PostgreSQL, checked from a separate connection.

Before the fix, a buyer's cancel and `flask release-expired` ended a pending
order without asking the provider, `reconcile-payments` only looked at pending
orders, and the provider ended with the buyers' money for orders that had gone
(the first test failed: 2 charges kept, 0 paid orders)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from sqlalchemy import text

from ecommerce.errors import ShopError
from ecommerce.flashsale.fake_gateway import start_in_thread
from ecommerce.gateway import charge_key, reference
from ecommerce.services import invariants, orders, payment, settlement
from tests.helpers import (
    Clock,
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_for,
)


@pytest.fixture
def slow_provider():
    """A provider that answers after 1.5 s: longer than the shop waits."""
    servers = []

    def start(latency_ms: int = 1500):
        server, fake = start_in_thread(latency_ms=latency_ms)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", fake

    yield start
    for server in servers:
        server.shutdown()


def provider_shop(storm_shop, url: str, buyers: int = 4, **overrides):
    overrides.setdefault("payment_gateway_timeout_ms", 300)
    return storm_shop(buyers, payment_gateway_url=url, **overrides)


def lapse(shop) -> None:
    """Every reservation made so far lapses: the shop's clock moves past them,
    and the cron line expires them."""
    shop.clock.advance(shop.reservation_ttl_s + 1)
    orders.release_expired(shop)


def paid_orders(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM orders WHERE status = 'paid'")).scalar_one()


def assert_money_kept_equals_orders_paid(shop, fake, engine) -> None:
    stats = fake.stats()
    assert stats["kept"] == paid_orders(engine), stats
    assert not invariants.check(shop), invariants.check(shop)
    assert_invariants(engine)


def test_a_cancel_and_an_expiry_racing_late_charges_keep_no_money(
    storm_shop, committed, slow_provider
):
    url, fake = slow_provider()
    shop = provider_shop(storm_shop, url, reservation_ttl_s=1)
    shop.clock = Clock()
    hot = commit_item(committed, "Hot", "2.00", 10)
    commit_cart_lines(committed, [("ann", hot, 1), ("ben", hot, 1)])
    ann = payment.pay(shop, "ann", Decimal("2.00"))
    ben = payment.pay(shop, "ben", Decimal("2.00"))
    assert ann.status == ben.status == "pending"  # the shop stopped waiting

    cancelled = orders.cancel_order(shop, ann.order_id, "ann")  # the buyer gives up
    assert cancelled.status == "cancelled"
    lapse(shop)  # ben's reservation lapses; the cron line expires it
    assert _status(committed, ben) == "expired"
    # The provider decides both charges after the shop gave up on them.
    wait_for(lambda: fake.stats()["charge_calls"] == 2 and fake.charges_in_flight == 0)
    settlement.reconcile_payments(shop)

    with committed.connect() as conn:
        states = dict(conn.execute(text("SELECT id, status FROM orders")).all())
    assert states == {ann.order_id: "cancelled", ben.order_id: "expired"}
    assert fake.stats()["succeeded"] == 0  # voided before the orders ended
    assert shop_state(committed).stock[hot] == 10
    assert_money_kept_equals_orders_paid(shop, fake, committed)


@pytest.mark.parametrize("ending", ["cancel", "admin_refund", "expiry", "reconcile"])
def test_a_charge_that_succeeded_unheard_is_settled_by_every_ending(
    ending, storm_shop, committed, slow_provider
):
    """The provider took the money but the shop never heard (the answer was
    lost). A buyer's cancel or an admin's refund refunds it; an expiry keeps the
    sale (the stock was still reserved); reconcile records it as paid."""
    url, fake = slow_provider(latency_ms=0)
    shop = provider_shop(storm_shop, url, reservation_ttl_s=1)
    shop.clock = Clock()
    hot = commit_item(committed, "Hot", "1.14", 5)  # the fake never answers *.14
    commit_cart_lines(committed, [("cleo", hot, 1)])
    order = payment.pay(shop, "cleo", Decimal("1.14"))
    assert order.status == "pending"
    # The charge the shop sent is decided at the provider; its answer is lost.
    fake.charges[charge_key(order.order_id)] = {
        "status": "succeeded",
        "reference": reference(order.order_id),
    }

    if ending == "cancel":
        final = orders.cancel_order(shop, order.order_id, "cleo").status
    elif ending == "admin_refund":
        final = orders.refund_order(shop, order.order_id).status
    elif ending == "expiry":
        lapse(shop)
        final = _status(committed, order)
    else:
        settlement.reconcile_payments(shop)
        final = _status(committed, order)

    expected = {
        "cancel": "refunded",
        "admin_refund": "refunded",
        "expiry": "paid",
        "reconcile": "paid",
    }
    assert final == expected[ending]
    assert fake.stats()["refunds"] == (1 if final == "refunded" else 0)
    after = shop_state(committed)
    assert after.stock[hot] == (4 if final == "paid" else 5)
    assert_conserved({hot: Decimal(5)}, after)
    assert_money_kept_equals_orders_paid(shop, fake, committed)


def _status(engine, order) -> str:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM orders WHERE id = :o"), {"o": order.order_id}
        ).scalar_one()


def test_reconcile_finds_the_charge_of_an_order_that_ended_unsettled(
    storm_shop, committed, slow_provider
):
    """An order cancelled while the shop had no provider configured (or ended
    before this release) keeps its charge open; reconcile-payments asks, finds
    the money and refunds it once; check-invariants saw the disagreement."""
    url, fake = slow_provider(latency_ms=0)
    shop = provider_shop(storm_shop, url)
    hot = commit_item(committed, "Hot", "1.14", 5)
    commit_cart_lines(committed, [("dan", hot, 1)])
    order = payment.pay(shop, "dan", Decimal("1.14"))
    fake.charges[charge_key(order.order_id)] = {
        "status": "succeeded",
        "reference": reference(order.order_id),
    }
    offline = storm_shop(2)  # no provider configured: the cancel cannot void
    assert orders.cancel_order(offline, order.order_id, "dan").status == "cancelled"
    found = invariants.check(shop)
    assert [v.check for v in found] == ["provider_disagrees"], found

    counts = settlement.reconcile_payments(shop)
    assert counts["refunded"] == 1
    assert _status(committed, order) == "refunded"
    settlement.reconcile_payments(shop)  # again: nothing left to do, no second refund
    assert fake.stats()["refunds"] == 1
    assert_money_kept_equals_orders_paid(shop, fake, committed)


def test_a_storm_where_the_provider_straddles_the_shops_wait(storm_shop, committed, slow_provider):
    """24 buyers pay through a provider that answers in about as long as the shop
    waits; meanwhile buyers cancel, and the cron lines run. After everything is
    decided: money kept = orders paid, every refund sent once."""
    url, fake = slow_provider(latency_ms=300)
    users = [f"s{n}" for n in range(24)]
    shop = provider_shop(
        storm_shop, url, len(users) + 8, payment_gateway_timeout_ms=300, reservation_ttl_s=1
    )
    shop.clock = Clock(running=True)  # reservations lapse during the storm too
    hot = commit_item(committed, "Hot", "3.00", 100)
    commit_cart_lines(committed, [(u, hot, 1) for u in users])
    rng = random.Random(1212)

    def buyer(user: str):
        try:
            order = payment.pay(shop, user, Decimal("3.00"))
        except ShopError as refused:
            return refused.code
        if rng.random() < 0.5:
            try:
                return orders.cancel_order(shop, order.order_id, user).status
            except ShopError as refused:
                return refused.code
        return order.status

    def cron():
        for _ in range(10):
            orders.release_expired(shop)
            settlement.reconcile_payments(shop)

    results = run_together([lambda u=u: buyer(u) for u in users] + [cron, cron])
    assert not [r for r in results if isinstance(r, BaseException)], results
    # Everything decided: no charge in flight, the reservations lapsed and ran out.
    wait_for(lambda: fake.charges_in_flight == 0)
    lapse(shop)
    assert _count(committed, "pending") == 0
    settlement.reconcile_payments(shop)

    refunded = _count(committed, "refunded")
    assert fake.stats()["refunds"] == refunded  # one refund per refunded order, sent once
    with committed.connect() as conn:
        unconfirmed = conn.execute(
            text("SELECT count(*) FROM refunds WHERE confirmed_at IS NULL")
        ).scalar_one()
    assert unconfirmed == 0
    assert_conserved({hot: Decimal(100)}, shop_state(committed))
    assert_money_kept_equals_orders_paid(shop, fake, committed)


def _count(engine, status: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM orders WHERE status = :s"), {"s": status}
        ).scalar_one()
