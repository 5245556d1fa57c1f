"""The synchronous replication trap: a COMMIT whose wait for the standby is
cancelled (pg_cancel_backend: an operator, a tool) still commits on the primary,
with only a WARNING, and may be missing on the standby a failover promotes. The
shop must not acknowledge such an order: the pay is 503, its Idempotency-Key
replays are 503 too while the standby lacks it, and once the standby has it,
the same key answers the order. A real server, made to wait for a standby that
never confirms (synchronous_standby_names names one that does not exist).
Before the fix the cancelled pay answered 201."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from ecommerce.errors import ServiceBusy
from ecommerce.services import cart, payment
from tests.helpers import assert_invariants, commit_item, shop_state

pytestmark = pytest.mark.slow  # a private PostgreSQL


def test_a_commit_the_standby_may_lack_is_never_acknowledged(
    private_server, storm_shop, pay_combining
):
    primary = private_server
    item = commit_item(primary.engine, "Hot", "1.00", 10)
    shop = storm_shop(4, database_url=primary.url)
    cart.add_to_cart(shop, "ann", item, 2)
    primary.configure("synchronous_standby_names", "ghost")

    def pay_with_its_commit_cancelled():
        results = []
        payer = threading.Thread(
            target=lambda: results.append(
                _outcome(lambda: payment.pay(shop, "ann", Decimal("2.00"), "k-1"))
            )
        )
        payer.start()
        primary.cancel_the_commit_waiting_for_the_standby()
        payer.join(30)
        assert not payer.is_alive()
        return results[0]

    first = pay_with_its_commit_cancelled()
    assert isinstance(first, ServiceBusy) and "Idempotency-Key" in first.message, first
    # Committed on this server: the order is there, yet it was not acknowledged.
    assert shop_state(primary.engine).orders == 1
    # The same key again: the replay waits for the standby too, and is cut short.
    again = pay_with_its_commit_cancelled()
    assert isinstance(again, ServiceBusy) and "Idempotency-Key" in again.message, again

    primary.configure("synchronous_standby_names", "")  # the standby has caught up
    order = payment.pay(shop, "ann", Decimal("2.00"), "k-1")
    assert order.replayed and order.user_id == "ann" and order.total == Decimal("2.00")
    after = shop_state(primary.engine)
    assert after.orders == 1 and after.stock[item] == 8
    assert_invariants(primary.engine)


def _outcome(call):
    try:
        return call()
    except ServiceBusy as busy:
        return busy
