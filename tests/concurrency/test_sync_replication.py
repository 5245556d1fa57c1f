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
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ecommerce import migrations
from ecommerce.embedded_db import ensure_database, ensure_server, server_url, stop_server
from ecommerce.errors import ServiceBusy
from ecommerce.services import cart, payment
from tests.helpers import assert_invariants, commit_item, shop_state


@pytest.fixture
def waiting_primary(tmp_path: Path):
    """A private server whose commits wait for a standby (``.confirm()`` lets them
    through, as a standby that catches up would)."""
    instance = tmp_path / "pg"
    url = server_url(ensure_server(instance), "shop").render_as_string(hide_password=False)
    ensure_database(url)
    migrations.upgrade(url)
    engine = create_engine(url)

    class Primary:
        def __init__(self) -> None:
            self.url, self.engine = url, engine

        def standby_names(self, names: str) -> None:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'"))
                conn.execute(text("SELECT pg_reload_conf()"))
            deadline = time.monotonic() + 10
            while True:  # the reload is seen by new sessions
                with engine.connect() as conn:
                    if conn.execute(text("SHOW synchronous_standby_names")).scalar() == names:
                        return
                assert time.monotonic() < deadline, "the server did not reload"
                time.sleep(0.01)

        def cancel_the_commit_waiting_for_the_standby(self) -> None:
            deadline = time.monotonic() + 10
            while True:
                with engine.connect() as conn:
                    cancelled = conn.execute(
                        text(
                            "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity"
                            " WHERE wait_event = 'SyncRep'"
                        )
                    ).scalar_one()
                if cancelled:
                    return
                assert time.monotonic() < deadline, "no commit waited for the standby"
                time.sleep(0.01)

    primary = Primary()
    try:
        yield primary
    finally:
        engine.dispose()
        stop_server(instance)


def test_a_commit_the_standby_may_lack_is_never_acknowledged(
    waiting_primary, storm_shop, pay_combining
):
    primary = waiting_primary
    item = commit_item(primary.engine, "Hot", "1.00", 10)
    shop = storm_shop(4, database_url=primary.url)
    cart.add_to_cart(shop, "ann", item, 2)
    primary.standby_names("ghost")

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

    primary.standby_names("")  # the standby has caught up
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
