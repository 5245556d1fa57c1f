"""The truth about money when a step fails half-way: a cancel or an admin's
refund records the refund before the provider moves the money, and an answer
after a charge says what is true. Real PostgreSQL, the fake provider, locks held
from a separate connection, books checked from a separate connection.

Before the fix, a cancel called the provider's refund first and recorded it
second: with the item's row held past LOCK_TIMEOUT_MS the cancel answered 503,
while the provider had already given the money back for an order still paid
(test_a_cancel_that_cannot_lock_the_items_moves_no_money: the provider kept 0
charges for 1 paid order)."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from ecommerce.errors import IdempotencyKeyInUse, ServiceBusy
from ecommerce.flashsale.fake_gateway import start_in_thread
from ecommerce.gateway import charge_key, reference
from ecommerce.services import invariants, orders, payment, settlement
from tests.helpers import (
    age_reservations,
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    held_by_another_transaction,
    in_thread,
    shop_state,
    wait_for,
)

# Ending an order has one engine whatever the combining: run these once.
once = pytest.mark.parametrize("pay_combining", [True], ids=["combined"])


@pytest.fixture
def provider():
    server, fake = start_in_thread()
    yield f"http://127.0.0.1:{server.server_address[1]}", fake
    server.shutdown()


def closed_port_url() -> str:
    """A provider that is down: nothing listens on this port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def row_held(engine: Engine, table: str, row_id: int):
    """The row locked FOR UPDATE by another transaction until the block ends."""
    return held_by_another_transaction(
        engine, f"SELECT 1 FROM {table} WHERE id = :i FOR UPDATE", i=row_id
    )


def paid_orders(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM orders WHERE status = 'paid'")).scalar_one()


def status_and_refund(engine: Engine, order_id: int) -> tuple[str, str | None]:
    """The order's status, and its refund row: None, 'unconfirmed' or 'confirmed'."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT o.status, CASE WHEN r.order_id IS NULL THEN NULL"
                " WHEN r.confirmed_at IS NULL THEN 'unconfirmed' ELSE 'confirmed' END"
                " FROM orders o LEFT JOIN refunds r ON r.order_id = o.id WHERE o.id = :o"
            ),
            {"o": order_id},
        ).one()  # type: ignore[return-value]


def assert_money_kept_equals_orders_paid(shop, fake, engine: Engine) -> None:
    assert fake.stats()["kept"] == paid_orders(engine), fake.stats()
    assert not invariants.check(shop), invariants.check(shop)
    assert_invariants(engine)


@once
@pytest.mark.parametrize("ending", ["cancel", "admin_refund"])
def test_a_cancel_that_cannot_lock_the_items_moves_no_money(
    ending, storm_shop, committed, provider
):
    url, fake = provider
    shop = storm_shop(4, payment_gateway_url=url, lock_timeout_ms=300)
    hot = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("ann", hot, 1)])
    order = payment.pay(shop, "ann", Decimal("1.00"))
    assert order.status == "paid"

    def end():
        if ending == "cancel":
            return orders.cancel_order(shop, order.order_id, "ann")
        return orders.refund_order(shop, order.order_id)

    with row_held(committed, "items", hot), pytest.raises(ServiceBusy):
        end()  # the hot row is held past the lock timeout: nothing happened
    assert status_and_refund(committed, order.order_id) == ("paid", None)
    assert fake.stats()["refunds"] == 0
    assert_money_kept_equals_orders_paid(shop, fake, committed)
    settlement.reconcile_payments(shop)
    assert_money_kept_equals_orders_paid(shop, fake, committed)

    ended = end()  # the retry does it all
    assert (ended.status, ended.refund_pending) == ("refunded", False)
    assert status_and_refund(committed, order.order_id) == ("refunded", "confirmed")
    assert shop_state(committed).stock[hot] == 5
    assert_money_kept_equals_orders_paid(shop, fake, committed)


@once
def test_a_refund_the_provider_does_not_confirm_is_recorded_then_sent_again(
    storm_shop, committed, provider
):
    """The provider goes down between the pay and the cancel: the cancel records
    the refund (the order refunded, its stock back) and says the refund is still
    pending; a repeated cancel, or reconcile-payments, sends it once the
    provider answers, and the provider refunds it once."""
    url, fake = provider
    shop = storm_shop(4, payment_gateway_url=url)
    down = storm_shop(4, payment_gateway_url=closed_port_url())
    hot = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("ann", hot, 1), ("ben", hot, 1)])
    ann = payment.pay(shop, "ann", Decimal("1.00"))
    ben = payment.pay(shop, "ben", Decimal("1.00"))

    for order, user in ((ann, "ann"), (ben, "ben")):
        ended = orders.cancel_order(down, order.order_id, user)
        assert (ended.status, ended.refund_pending) == ("refunded", True)
        assert status_and_refund(committed, order.order_id) == ("refunded", "unconfirmed")
    assert shop_state(committed).stock[hot] == 5
    assert fake.stats()["refunds"] == 0

    again = orders.cancel_order(shop, ann.order_id, "ann")  # the buyer asks again
    assert (again.status, again.refund_pending) == ("refunded", False)
    assert settlement.reconcile_payments(shop)["refunds_resent"] == 1  # ben's
    for order in (ann, ben):
        assert status_and_refund(committed, order.order_id) == ("refunded", "confirmed")
    assert fake.stats()["refunds"] == 2
    assert_conserved({hot: Decimal(5)}, shop_state(committed))
    assert_money_kept_equals_orders_paid(shop, fake, committed)


def test_a_cancel_answers_202_while_its_refund_is_unconfirmed(make_app, committed):
    """Over HTTP: 202 with ``"refund": "pending"``; 200 once the provider confirmed."""
    server, fake = start_in_thread()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        hot = commit_item(committed, "Hot", "1.00", 5)
        commit_cart_lines(committed, [("ann", hot, 1)])
        up = make_app(payment_gateway_url=url).test_client()
        paid = up.post("/cart/ann/pay", json={"amount": "1.00"})
        assert paid.status_code == 201, paid.json
        order_id = paid.json["order_id"]

        down = make_app(payment_gateway_url=closed_port_url()).test_client()
        pending = down.post(f"/orders/{order_id}/cancel")
        assert pending.status_code == 202, pending.json
        assert (pending.json["status"], pending.json["refund"]) == ("refunded", "pending")

        confirmed = up.post(f"/orders/{order_id}/cancel")
        assert confirmed.status_code == 200, confirmed.json
        assert confirmed.json["status"] == "refunded" and "refund" not in confirmed.json
        assert fake.stats()["refunds"] == 1
    finally:
        server.shutdown()


def order_of(engine: Engine, user: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT id FROM orders WHERE user_id = :u"), {"u": user}
        ).scalar_one()


def test_a_charge_whose_confirmation_fails_is_answered_pending_not_busy(storm_shop, committed):
    """The provider took the money, then recording it failed (the order's row
    held past the lock timeout): the answer is the pending order with its id
    (202), never 503 "nothing happened", and reconcile-payments records it.

    Before the fix the pay answered 503 busy while the provider had charged."""
    server, fake = start_in_thread(latency_ms=300)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        shop = storm_shop(4, payment_gateway_url=url, payment_gateway_timeout_ms=10_000)
        slow_locks = storm_shop(4, payment_gateway_url=url, lock_timeout_ms=200)
        hot = commit_item(committed, "Hot", "1.00", 5)
        commit_cart_lines(committed, [("ann", hot, 1)])

        paying = in_thread(lambda: payment.pay(slow_locks, "ann", Decimal("1.00")))
        wait_for(lambda: fake.charges_in_flight == 1, what="for the charge")
        with row_held(committed, "orders", order_of(committed, "ann")):
            answer = paying()  # charged, then the confirmation met the held row
        assert fake.stats()["succeeded"] == 1
        assert not isinstance(answer, BaseException), answer
        assert (answer.status, answer.order_id) == ("pending", order_of(committed, "ann"))

        assert settlement.reconcile_payments(shop)["paid"] == 1
        assert status_and_refund(committed, answer.order_id) == ("paid", None)
        assert_money_kept_equals_orders_paid(shop, fake, committed)
    finally:
        server.shutdown()


@pytest.mark.parametrize("second", ["same_worker", "other_worker"])
def test_a_key_is_held_until_its_charge_is_decided(second, storm_shop, committed):
    """The same Idempotency-Key again while the first pay is still charging:
    409 in use, from this process or another one, and the provider is charged
    once; after the outcome, the key replays the paid order.

    Before the fix the key was released when the order was reserved, and the
    second request started a second charge call (2 calls for one key)."""
    server, fake = start_in_thread(latency_ms=500)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        shop = storm_shop(4, payment_gateway_url=url, payment_gateway_timeout_ms=10_000)
        other = shop if second == "same_worker" else storm_shop(4, payment_gateway_url=url)
        hot = commit_item(committed, "Hot", "1.00", 5)
        commit_cart_lines(committed, [("ann", hot, 1)])

        first = in_thread(lambda: payment.pay(shop, "ann", Decimal("1.00"), "key-1"))
        wait_for(lambda: fake.charges_in_flight == 1, what="for the charge")
        with pytest.raises(IdempotencyKeyInUse):
            payment.pay(other, "ann", Decimal("1.00"), "key-1")
        paid = first()
        assert not isinstance(paid, BaseException), paid
        assert paid.status == "paid"

        replay = payment.pay(other, "ann", Decimal("1.00"), "key-1")
        assert (replay.status, replay.order_id, replay.replayed) == ("paid", paid.order_id, True)
        assert fake.stats()["charge_calls"] == 1
        assert_money_kept_equals_orders_paid(shop, fake, committed)
    finally:
        server.shutdown()


@once
def test_an_order_that_fails_to_expire_does_not_hold_up_the_others(storm_shop, committed, provider):
    """The oldest due order's item row is held past the lock timeout: that order
    is counted and left for the next run, the next one expires in this run.

    Before the fix the first order's 503 ended the whole run: the second order
    kept its stock."""
    url, fake = provider
    shop = storm_shop(4, payment_gateway_url=url, lock_timeout_ms=200)
    held_item = commit_item(committed, "Held", "1.14", 5)  # the fake never answers *.14
    free_item = commit_item(committed, "Free", "2.14", 5)
    commit_cart_lines(committed, [("ann", held_item, 1), ("ben", free_item, 1)])
    ann = payment.pay(shop, "ann", Decimal("1.14"))
    ben = payment.pay(shop, "ben", Decimal("2.14"))
    assert ann.status == ben.status == "pending" and ann.order_id < ben.order_id
    age_reservations(committed, shop.reservation_ttl_s + 1)

    with row_held(committed, "items", held_item):
        expiry = orders.release_expired(shop)
    assert (expiry.released, expiry.failed) == (1, 1)
    assert status_and_refund(committed, ann.order_id) == ("pending", None)
    assert status_and_refund(committed, ben.order_id) == ("expired", None)

    assert orders.release_expired(shop) == orders.Expiry(released=1, failed=0)  # the next run
    assert shop_state(committed).stock == {held_item: 5, free_item: 5}
    assert_money_kept_equals_orders_paid(shop, fake, committed)


@once
def test_an_order_that_fails_to_reconcile_does_not_hold_up_the_others(
    storm_shop, committed, provider
):
    """reconcile-payments likewise: an order whose row is held is counted and
    left for the next run; the next order is settled in this one.

    Before the fix the first order's 503 ended the whole run."""
    url, fake = provider
    shop = storm_shop(4, payment_gateway_url=url, lock_timeout_ms=200)
    hot = commit_item(committed, "Hot", "1.14", 5)  # the fake never answers *.14
    commit_cart_lines(committed, [("ann", hot, 1), ("ben", hot, 1)])
    ann = payment.pay(shop, "ann", Decimal("1.14"))
    ben = payment.pay(shop, "ben", Decimal("1.14"))
    for order in (ann, ben):  # decided at the provider; the answers were lost
        fake.charges[charge_key(order.order_id)] = {
            "status": "succeeded",
            "reference": reference(order.order_id),
        }

    with row_held(committed, "orders", ann.order_id):
        counts = settlement.reconcile_payments(shop)
    assert (counts["paid"], counts["unknown"]) == (1, 1)
    assert status_and_refund(committed, ann.order_id) == ("pending", None)
    assert status_and_refund(committed, ben.order_id) == ("paid", None)

    assert settlement.reconcile_payments(shop)["paid"] == 1  # the next run
    assert_money_kept_equals_orders_paid(shop, fake, committed)
