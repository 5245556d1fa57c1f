"""Paying through an outside provider: reserve, charge with no lock held,
confirm or release — against the fake provider, on real PostgreSQL, with real
threads."""

import hashlib
import hmac
import json
import threading
from decimal import Decimal

import pytest
from sqlalchemy import text

from ecommerce.errors import Conflict, PaymentDeclined
from ecommerce.flashsale.fake_gateway import start_in_thread
from ecommerce.services import orders, payment, settlement
from tests.helpers import (
    age_reservations,
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_for,
)

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def provider():
    server, fake = start_in_thread()
    yield f"http://127.0.0.1:{server.server_address[1]}", fake
    server.shutdown()


@pytest.fixture
def gateway_shop(storm_shop, provider):
    url, _ = provider

    def make(buyers: int = 8, **overrides):
        overrides.setdefault("payment_gateway_timeout_ms", 400)
        overrides.setdefault("payment_gateway_url", url)
        return storm_shop(buyers, payment_webhook_secret=SECRET, **overrides)

    return make


def status_of(engine, order_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM orders WHERE id = :o"), {"o": order_id}
        ).scalar_one()


def test_a_successful_charge_pays_and_a_declined_one_gives_the_stock_back(
    gateway_shop, provider, committed
):
    shop = gateway_shop()
    fine = commit_item(committed, "Fine", "2.00", 5)
    unlucky = commit_item(committed, "Unlucky", "1.13", 5)  # the fake declines *.13
    commit_cart_lines(committed, [("ann", fine, 2), ("ben", unlucky, 1)])

    paid = payment.pay(shop, "ann", Decimal("4.00"))
    assert paid.status == "paid"
    with pytest.raises(PaymentDeclined) as declined:
        payment.pay(shop, "ben", Decimal("1.13"))
    order_id = declined.value.details["order_id"]
    assert status_of(committed, order_id) == "payment_failed"
    after = shop_state(committed)
    assert after.stock == {fine: 3, unlucky: 5}  # the declined unit went back
    assert_conserved({fine: Decimal(5), unlucky: Decimal(5)}, after)
    assert_invariants(committed)
    assert provider[1].stats()["charge_calls"] == 2


def test_a_hanging_provider_never_holds_a_lock_another_buyer_needs(gateway_shop, committed):
    shop = gateway_shop(payment_gateway_timeout_ms=5000)
    hot = commit_item(committed, "Hot", "1.14", 10)  # one unit: 1.14, never answered
    commit_cart_lines(committed, [("hangs", hot, 1), ("quick", hot, 2)])
    outcome: list[object] = []
    slow = threading.Thread(
        target=lambda: outcome.append(payment.pay(shop, "hangs", Decimal("1.14")))
    )
    slow.start()
    # reserved: stock taken, order pending
    wait_for(lambda: shop_state(committed).orders, 10, "for the reservation")

    quick = payment.pay(shop, "quick", Decimal("2.28"))  # same item, same row

    assert quick.status == "paid"
    assert slow.is_alive(), "the other buyer was served while the first one's provider hung"
    slow.join(30)
    (pending,) = outcome
    assert pending.status == "pending" and pending.expires_at is not None
    assert shop_state(committed).stock[hot] == 7
    assert_invariants(committed)


def test_expired_reservations_go_back_and_a_late_charge_is_refunded(
    gateway_shop, provider, committed
):
    shop = gateway_shop(reservation_ttl_s=60, payment_gateway_timeout_ms=200)
    hot = commit_item(committed, "Hot", "1.14", 3)
    commit_cart_lines(committed, [("late", hot, 1)])
    pending = payment.pay(shop, "late", Decimal("1.14"))
    assert pending.status == "pending"
    assert orders.release_expired(shop).released == 0  # not due yet
    age_reservations(committed, 61)  # its minute of reservation has passed
    assert orders.release_expired(shop).released == 1
    assert orders.release_expired(shop).released == 0  # idempotent
    assert status_of(committed, pending.order_id) == "expired"
    assert shop_state(committed).stock[hot] == 3

    # The provider confirms after all: the money goes back, the stock is not sold twice.
    late = settlement.confirm_payment(shop, pending.order_id, "succeeded")
    assert late.status == "refunded"
    assert provider[1].stats()["refunds"] == 1
    assert shop_state(committed).stock[hot] == 3
    assert_invariants(committed)


def test_reconcile_settles_what_the_provider_knows(gateway_shop, committed):
    server, fake = start_in_thread(latency_ms=600)  # answers after the shop gave up
    try:
        shop = gateway_shop(
            payment_gateway_url=f"http://127.0.0.1:{server.server_address[1]}",
            payment_gateway_timeout_ms=200,
        )
        item = commit_item(committed, "Slow", "3.00", 4)
        commit_cart_lines(committed, [("cleo", item, 1)])
        pending = payment.pay(shop, "cleo", Decimal("3.00"))
        assert pending.status == "pending"
        # Later (cron runs it), once the provider decided: it did charge.
        wait_for(
            lambda: not fake.charges_in_flight and fake.stats()["charge_calls"],
            10,
            "for the provider to decide",
        )
        patient = gateway_shop(
            payment_gateway_url=f"http://127.0.0.1:{server.server_address[1]}",
            payment_gateway_timeout_ms=3000,
        )
        counts = settlement.reconcile_payments(patient)
        assert counts["paid"] == 1
        assert status_of(committed, pending.order_id) == "paid"
        assert fake.stats()["succeeded"] == 1  # charged once, not twice
        assert_invariants(committed)
    finally:
        server.shutdown()


def test_cancel_confirm_and_expiry_of_one_order_end_in_one_state(gateway_shop, committed):
    shop = gateway_shop(reservation_ttl_s=60, payment_gateway_timeout_ms=200)
    hot = commit_item(committed, "Hot", "1.14", 5)
    commit_cart_lines(committed, [("dora", hot, 1)])
    order = payment.pay(shop, "dora", Decimal("1.14"))
    assert order.status == "pending"
    age_reservations(committed, 61)  # due: the expiry races the cancel and the confirm

    results = run_together(
        [lambda: orders.cancel_order(shop, order.order_id, "dora")] * 3
        + [lambda: settlement.confirm_payment(shop, order.order_id, "succeeded")] * 3
        + [lambda: orders.release_expired(shop)] * 3
    )
    assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, Conflict)]
    final = status_of(committed, order.order_id)
    assert final in ("cancelled", "refunded", "expired", "paid")
    after = shop_state(committed)
    held = 1 if final == "paid" else 0
    assert after.stock[hot] == 5 - held  # the two units counted once
    assert_conserved({hot: Decimal(5)}, after)
    assert_invariants(committed)


def test_a_storm_of_combined_pays_through_the_provider(gateway_shop, committed):
    shop = gateway_shop(24, payment_gateway_timeout_ms=10_000)
    hot = commit_item(committed, "Hot", "5.00", 10)
    users = [f"s{n}" for n in range(24)]
    commit_cart_lines(committed, [(u, hot, 1) for u in users])
    results = run_together([lambda u=u: payment.pay(shop, u, Decimal("5.00")) for u in users])
    paid = [r for r in results if getattr(r, "status", None) == "paid"]
    assert len(paid) == 10, results
    assert all(getattr(r, "code", None) == "insufficient_stock" for r in results if r not in paid)
    after = shop_state(committed)
    assert after.stock[hot] == 0 and after.payments == 10
    assert_invariants(committed)


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_the_webhook_settles_a_pending_order_once_and_refuses_bad_signatures(
    make_app, provider, committed
):
    url, _ = provider
    app = make_app(
        payment_gateway_url=url,
        payment_gateway_timeout_ms=200,
        payment_webhook_secret=SECRET,
    )
    client = app.test_client()
    hot = commit_item(committed, "Hot", "1.14", 5)
    commit_cart_lines(committed, [("eli", hot, 1)])
    answer = client.post("/cart/eli/pay", json={"amount": "1.14"})
    assert answer.status_code == 202, answer.get_json()
    order_id = answer.get_json()["order_id"]
    assert answer.get_json()["status"] == "pending" and answer.get_json()["expires_at"]

    body = json.dumps({"reference": f"order-{order_id}", "status": "succeeded"}).encode()
    forged = client.post("/payments/webhook", data=body, headers=sign(body, "wrong"))
    assert forged.status_code == 401
    unsigned = client.post("/payments/webhook", data=body)
    assert unsigned.status_code == 401
    assert status_of(committed, order_id) == "pending"

    for _ in range(2):  # a repeated event changes nothing
        settled = client.post(
            "/payments/webhook",
            data=body,
            headers=sign(body) | {"Content-Type": "application/json"},
        )
        assert settled.status_code == 200 and settled.get_json()["status"] == "paid"
    assert shop_state(committed).payments == 1
    assert client.get(f"/orders/{order_id}").get_json()["status"] == "paid"
    assert_invariants(committed)
