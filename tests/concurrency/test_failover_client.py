"""The shop's side of a failover, on a real server: a server that stops taking
writes (what a pooled connection meets when its node became a standby behind a
pooler: SQLSTATE 25006) gets 503 and readiness says not ready, never a 500; the
pool drops those connections, and once the server takes writes again the next
requests sell. Before, a pay on a standby's connection was a 500 and /readyz
said ready."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc

from ecommerce import metrics
from ecommerce.errors import NotReady, ServiceBusy
from ecommerce.services import cart, health, payment
from tests.helpers import assert_invariants, commit_item, shop_state

pytestmark = pytest.mark.slow  # a private PostgreSQL


def test_a_server_that_stops_taking_writes_is_busy_then_recovers(
    private_server, storm_shop, pay_combining
):
    item = commit_item(private_server.engine, "Hot", "1.00", 10)
    shop = storm_shop(4, database_url=private_server.url)
    cart.add_to_cart(shop, "ann", item, 1)
    assert health.readiness(shop)

    private_server.configure("default_transaction_read_only", "on")
    with pytest.raises(ServiceBusy):
        payment.pay(shop, "ann", Decimal("1.00"), "k-1")
    with pytest.raises(ServiceBusy):
        cart.add_to_cart(shop, "bob", item, 1)
    with pytest.raises(NotReady, match="read-only"):
        health.readiness(shop)

    private_server.configure("default_transaction_read_only", "off")
    assert health.readiness(shop)
    order = payment.pay(shop, "ann", Decimal("1.00"), "k-1")
    assert order.user_id == "ann" and not order.replayed
    after = shop_state(private_server.engine)
    assert after.orders == 1 and after.stock[item] == 9
    assert_invariants(private_server.engine)


@pytest.mark.parametrize("pay_combining", [True], ids=["combined"])  # once, combined
def test_a_connection_kept_by_a_combiner_is_replaced_once_one_is_found_dead(
    private_server, storm_shop
):
    """A combiner keeps its connection between batches; once any connection of
    the shop is found dead (here: a write refused by a server that turned
    read-only, as a node turned standby does), the connection the cart-read
    combiner keeps is replaced before its next batch, though that combiner only
    reads and would never meet the error itself. Before, it kept reading from
    the old server (after a failover: a stale or diverged node)."""
    item = commit_item(private_server.engine, "Hot", "1.00", 10)
    shop = storm_shop(4, database_url=private_server.url, pay_combining=True, cart_combining=True)
    cart.add_to_cart(shop, "ann", item, 1)
    assert cart.view_cart(shop, "ann").total == Decimal("1.00")
    before = _backends(private_server)  # the add and cart-read combiners' connections
    assert len(before) == 2, before
    private_server.configure("default_transaction_read_only", "on")
    with pytest.raises(ServiceBusy):
        payment.pay(shop, "ann", Decimal("1.00"))  # the pay combiner's connection dies
    private_server.configure("default_transaction_read_only", "off")
    assert cart.view_cart(shop, "ann").total == Decimal("1.00")
    # The cart-read combiner's is gone (the add combiner's has not been used
    # since: it is replaced at its next batch).
    deadline = time.monotonic() + 10
    while not before - _backends(private_server):
        assert time.monotonic() < deadline, "the cart reads kept their old connection"
        time.sleep(0.01)


def _backends(server) -> set[int]:
    with server.engine.connect() as conn:
        return set(
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = 'ecommerce'")
            ).scalars()
        )


@pytest.mark.parametrize("pay_combining", [False], ids=["alone"])  # once, pooled only
def test_connections_made_before_they_were_forgotten_are_replaced_at_their_next_use(
    private_server, storm_shop
):
    """What /readyz does on a read-only session (a node turned standby behind a
    pooler): every connection made so far is replaced when it is next checked
    out, within the pool's size (no second pool beside the first)."""
    shop = storm_shop(2, database_url=private_server.url, pay_combining=False, cart_combining=False)

    def backend(session):
        return session.execute(text("SELECT pg_backend_pid()")).scalar_one()

    first = shop.transaction(backend, "probe")
    assert shop.transaction(backend, "probe") == first  # pooled, reused
    shop.db.forget_connections()
    second = shop.transaction(backend, "probe")
    assert second != first
    assert shop.transaction(backend, "probe") == second  # and the new one is kept
    assert shop.db.engine.pool.checkedout() == 0


@pytest.mark.parametrize("pay_combining", [False, True], ids=["alone", "combined"])
def test_a_checkout_while_connections_keep_being_found_dead_is_served(
    committed, make_app, pay_combining
):
    """A pooled connection made before the last one found dead is replaced at
    checkout; meanwhile other requests keep finding connections dead (a
    failover: every reconnect of this checkout sees the generation move again,
    forced here by a pool "connect" listener that forgets every connection
    right after the shop stamped the new one). Before, SQLAlchemy's two
    reconnect tries ran out: the checkout raised InvalidRequestError (not a
    database error: a 500 without Retry-After), its last invalidate moved the
    generation once more, and the in-use gauge kept one connection per refusal."""
    item = commit_item(committed, "Hot", "1.00", 10)
    app = make_app(pool_size=2)
    shop = app.extensions["shop"]
    client = app.test_client()
    assert client.post("/cart/ann/add", json={"item_id": item, "quantity": 1}).status_code == 200
    pool = shop.db.engine.pool
    # The gauge is the process's (other shops of this test run count in it):
    # what must hold is that it moves with this pool's checked-out count.
    offset = metrics.DB_POOL_IN_USE._value.get() - pool.checkedout()
    shop.db.forget_connections()  # the pooled connections are now older than the last death

    found_dead_meanwhile = []

    def another_request_finds_one_dead(_dbapi_connection, _record):
        if len(found_dead_meanwhile) < 2:  # during this checkout's reconnect tries
            found_dead_meanwhile.append(shop.db._generation)
            shop.db.forget_connections()

    event.listen(shop.db.engine.pool, "connect", another_request_finds_one_dead)
    generation = shop.db._generation
    answer = client.post(
        "/cart/ann/pay", json={"amount": "1.00"}, headers={"Idempotency-Key": "k-1"}
    )
    event.remove(shop.db.engine.pool, "connect", another_request_finds_one_dead)

    assert answer.status_code in (201, 503), (answer.status_code, answer.get_json())
    if answer.status_code == 503:
        assert "Retry-After" in answer.headers
    # Only the other requests moved the generation: no cascade from this checkout.
    assert shop.db._generation == generation + len(found_dead_meanwhile)
    # The in-use gauge counts what the pool has out, no more.
    assert metrics.DB_POOL_IN_USE._value.get() - pool.checkedout() == offset
    again = client.post(
        "/cart/ann/pay", json={"amount": "1.00"}, headers={"Idempotency-Key": "k-1"}
    )
    assert again.status_code in (200, 201), again.get_json()
    assert shop_state(committed).orders == 1


@pytest.mark.parametrize("pay_combining", [False, True], ids=["alone", "combined"])
def test_a_pool_that_cannot_hand_out_a_connection_is_busy(committed, make_app, pay_combining):
    """However a checkout fails, the answer is 503 with Retry-After: here every
    connection the pool tries is refused at checkout (a listener raising
    DisconnectionError, as a pessimistic ping does on a dead server), so
    SQLAlchemy gives up after its reconnects with InvalidRequestError, which is
    not a database error. Before, that was a 500."""
    item = commit_item(committed, "Hot", "1.00", 10)
    app = make_app(pool_size=2)
    shop = app.extensions["shop"]
    client = app.test_client()
    assert client.post("/cart/ann/add", json={"item_id": item, "quantity": 1}).status_code == 200
    shop.db.forget_connections()  # the combiners' kept connections go back to the pool

    def refuse(_dbapi_connection, _record, _proxy):
        raise sa_exc.DisconnectionError("refused")

    event.listen(shop.db.engine.pool, "checkout", refuse)
    try:
        answer = client.post(
            "/cart/ann/pay", json={"amount": "1.00"}, headers={"Idempotency-Key": "k-1"}
        )
    finally:
        event.remove(shop.db.engine.pool, "checkout", refuse)
    assert answer.status_code == 503, (answer.status_code, answer.get_json())
    assert "Retry-After" in answer.headers
    again = client.post(
        "/cart/ann/pay", json={"amount": "1.00"}, headers={"Idempotency-Key": "k-1"}
    )
    assert again.status_code == 201, again.get_json()
