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
from sqlalchemy import text

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
