"""The shop's side of a failover, on a real server: a server that stops taking
writes (what a pooled connection meets when its node became a standby behind a
pooler: SQLSTATE 25006) gets 503 and readiness says not ready, never a 500; the
pool drops those connections, and once the server takes writes again the next
requests sell. Before, a pay on a standby's connection was a 500 and /readyz
said ready."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ecommerce.errors import NotReady, ServiceBusy
from ecommerce.services import cart, health, payment
from tests.helpers import assert_invariants, commit_item, shop_state


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
