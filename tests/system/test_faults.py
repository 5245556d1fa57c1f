"""Faults on sale night: a worker killed while it holds the row locks, and the
database restarting under a storm. Only a PostgreSQL this test starts itself is
ever restarted."""

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from ecommerce.database import migrations
from ecommerce.database.embedded import ensure_database, ensure_server, server_url, stop_server
from tests.helpers import (
    age_reservations,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    shop_state,
    wait_for,
)
from tests.system.server import HttpClient, Server, Shoppers

pytestmark = pytest.mark.slow


def row_is_locked(engine, item_id) -> bool:
    with engine.connect() as conn:
        try:
            conn.execute(
                text("SELECT 1 FROM items WHERE id = :i FOR UPDATE NOWAIT"), {"i": item_id}
            )
            return False
        except OperationalError as exc:
            assert "could not obtain lock" in str(exc)
            return True


@pytest.mark.parametrize("combining", ["true", "false"])
def test_worker_killed_while_holding_the_row_locks(database_url, committed, tmp_path, combining):
    signal_file = tmp_path / "holding-locks"
    hot = commit_item(committed, "Hot", "3.00", 5)
    commit_cart_lines(committed, [("victim", hot, 2), ("next1", hot, 1), ("next2", hot, 1)])
    server = Server(
        database_url,
        app="tests.system.hold_locks_app:app",
        WEB_CONCURRENCY="2",
        HOLD_LOCKS_USER="victim",
        PAY_COMBINING=combining,
        CART_COMBINING=combining,
        HOLD_LOCKS_SIGNAL=str(signal_file),
    ).start()
    try:
        outcome: dict[str, object] = {}

        def victim() -> None:
            http = HttpClient(server.port, timeout=60, reconnect=False)
            try:
                outcome["victim"] = http.request("POST", "/cart/victim/pay", {"amount": "6.00"})
            except Exception as exc:  # the worker dies under it
                outcome["victim"] = exc

        thread = threading.Thread(target=victim)
        thread.start()
        pid = int(wait_for(lambda: signal_file.exists() and signal_file.read_text(), 20))
        assert pid in server.worker_pids()
        assert row_is_locked(committed, hot), "the worker holds the item row lock"

        os.kill(pid, signal.SIGKILL)
        thread.join(30)

        assert isinstance(outcome["victim"], Exception), outcome  # no answer, no order
        wait_for(lambda: not row_is_locked(committed, hot), 10)
        after = shop_state(committed)
        assert after.stock[hot] == 5 and after.orders == 0
        with committed.connect() as conn:
            cart = conn.execute(text("SELECT quantity FROM carts WHERE user_id = 'victim'")).all()
        assert cart == [(2,)], "the killed pay rolled back entirely"

        http = HttpClient(server.port)
        for user in ("next1", "next2"):
            paid = http.request("POST", f"/cart/{user}/pay", {"amount": "3.00"})
            assert paid.status == 201, paid.body
        assert shop_state(committed).stock[hot] == 3
        assert_invariants(committed)
    finally:
        server.stop()


@pytest.mark.parametrize("combining", ["true", "false"])
def test_database_restart_during_a_storm(tmp_path: Path, combining: str):
    instance = tmp_path / "pg"
    url = server_url(ensure_server(instance), "shop").render_as_string(hide_password=False)
    ensure_database(url)
    migrations.upgrade(url)
    engine = create_engine(url, pool_pre_ping=True)  # its connections die with the restart
    hot = commit_item(engine, "Hot", "1.00", 100_000)
    server = Server(
        url,
        WEB_CONCURRENCY="2",
        LOCK_TIMEOUT_MS="1000",
        STATEMENT_TIMEOUT_MS="3000",
        DB_POOL_TIMEOUT_MS="1000",
        COMBINING_QUEUE_WAIT_MS="1000",
        PAY_COMBINING=combining,
        CART_COMBINING=combining,
    ).start()
    shoppers = Shoppers(server.port, hot, 6, keyed=False, timeout=20)
    try:
        shoppers.start()
        wait_for(lambda: shoppers.answered("pay", 201), 30)  # selling
        down_at = time.monotonic()
        stop_server(instance)
        wait_for(
            lambda: (
                shoppers.answered("pay", 503, down_at) or shoppers.answered("add", 503, down_at)
            ),
            30,
        )
        ensure_server(instance)
        up_at = time.monotonic()
        # Sales resume by themselves: dead pooled connections are replaced.
        wait_for(lambda: shoppers.answered("pay", 201, up_at), 60)
    finally:
        shoppers.stop()
        server.stop()

    try:
        assert not shoppers.failures, shoppers.failures
        statuses = Counter((status, code) for _, _, status, code in shoppers.events)
        assert set(statuses) <= {(200, None), (201, None), (503, "busy")}, statuses
        assert_invariants(engine)
        after = shop_state(engine)
        assert after.sold[hot] == after.orders > 0
    finally:
        engine.dispose()
        stop_server(instance)


def test_worker_killed_between_reserve_and_confirm(database_url, committed):
    """The worker dies while it waits for the payment provider: the reservation
    stays pending, `flask release-expired` gives its stock back, nothing is lost
    or sold twice, and the restarted worker sells again."""
    from ecommerce.flashsale.fake_gateway import start_in_thread

    provider, _ = start_in_thread()
    hot = commit_item(committed, "Hot", "1.14", 3)  # the fake never answers *.14
    commit_cart_lines(committed, [("victim", hot, 1), ("next", hot, 2)])
    server = Server(
        database_url,
        PAYMENT_GATEWAY_URL=f"http://127.0.0.1:{provider.server_address[1]}",
        PAYMENT_GATEWAY_TIMEOUT_MS="30000",
        RESERVATION_TTL_S="60",
        WEB_CONCURRENCY="1",
    )
    try:
        with server:
            waiting = threading.Thread(
                target=lambda: _quietly(
                    lambda: HttpClient(server.port, reconnect=False).request(
                        "POST", "/cart/victim/pay", {"amount": "1.14"}
                    )
                )
            )
            waiting.start()
            wait_for(lambda: shop_state(committed).orders, 20, "for the reservation")
            for pid in server.worker_pids():
                os.kill(pid, signal.SIGKILL)
            waiting.join(30)

            with committed.connect() as conn:
                status = conn.execute(text("SELECT status FROM orders")).scalar_one()
            assert status == "pending" and shop_state(committed).stock[hot] == 2
            age_reservations(committed, 61)  # its minute of reservation has passed
            assert "released 1" in server.flask("release-expired").stdout
            assert shop_state(committed).stock[hot] == 3

            deadline = time.monotonic() + 20
            while True:  # gunicorn starts a new worker; the next buyer is served
                try:
                    # 2 units: 2.28, which the fake provider charges at once.
                    paid = HttpClient(server.port).request(
                        "POST", "/cart/next/pay", {"amount": "2.28"}
                    )
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert paid.status == 201, paid.body
    finally:
        provider.shutdown()
    after = shop_state(committed)
    assert after.stock[hot] == 1
    assert_invariants(committed)


def _quietly(call) -> None:
    # The worker is killed under this request: no answer is expected.
    with contextlib.suppress(Exception):
        call()
