"""Two app instances behind one PgBouncer in transaction pooling mode.

The shop keeps no state on a database connection (timeouts are SET LOCAL per
transaction, advisory locks are transaction-scoped, psycopg2 prepares nothing
on the server), so a transaction-pooling proxy with its default settings can
hand each transaction to any server connection, and every guarantee holds.
"""

from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.errors import ServiceBusy
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    backend_pid,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_until_the_session_has_ended,
)
from tests.system.pgbouncer import PGBOUNCER, PgBouncer
from tests.system.server import HttpClient, Server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PGBOUNCER is None,
        reason="PgBouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
    ),
]


@pytest.fixture
def bouncer(database_url, committed):
    bouncer = PgBouncer(database_url, pool_size=4).start()
    yield bouncer
    bouncer.stop()


def test_the_cli_and_every_bound_work_through_the_pooler(bouncer, make_app, committed):
    server = Server(bouncer.url)
    assert "seeded" in server.flask("seed").stdout

    app = make_app(
        database_url=bouncer.url,
        lock_timeout_ms=250,
        statement_timeout_ms=750,
        idle_in_transaction_timeout_ms=400,
    )
    shop = app.extensions["shop"]
    names = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
    shown = shop.transaction(
        lambda s: [s.execute(text(f"SHOW {n}")).scalar_one() for n in names], "probe"
    )
    assert shown == ["250ms", "750ms", "400ms"]
    with pytest.raises(ServiceBusy):  # statement_timeout
        shop.transaction(lambda s: s.execute(text("SELECT pg_sleep(2)")), "probe")

    def stall(session: Session) -> None:
        pid = backend_pid(session)  # the server connection the pooler gave this transaction
        # Idle in transaction past its bound: the server ends it.
        wait_until_the_session_has_ended(committed, pid)
        session.execute(text("SELECT 1"))

    with pytest.raises(ServiceBusy):
        shop.transaction(stall, "probe")


def test_two_instances_behind_pgbouncer_sell_exactly_the_stock(bouncer, committed):
    stock, buyers, keyed = 20, 60, 4
    hot = commit_item(committed, "Hot", "5.00", stock)
    side = commit_item(committed, "Side", "2.00", 100)
    users = [f"b{n}" for n in range(buyers)]
    keyed_users = [f"k{n}" for n in range(keyed)]
    commit_cart_lines(committed, [(u, hot, 1) for u in users] + [(u, side, 1) for u in keyed_users])

    env = {"PAY_COMBINING": "true", "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "8"}
    first, second = Server(bouncer.url, **env), Server(bouncer.url, **env)
    with first, second:
        ports = [first.port, second.port]

        def pay(user: str, port: int, amount: str, key: str | None = None):
            http = HttpClient(port)
            headers = {"Idempotency-Key": key} if key else {}
            r = http.request("POST", f"/cart/{user}/pay", {"amount": amount}, headers)
            http.close()
            return user, r

        calls = [lambda u=u, n=n: pay(u, ports[n % 2], "5.00") for n, u in enumerate(users)]
        # The same key sent to both instances at once: one effect.
        calls += [
            lambda u=u, p=p: pay(u, p, "2.00", f"key-{u}") for u in keyed_users for p in ports
        ]
        results = run_together(calls)

    statuses = Counter((r.status, r.error_code) for _, r in results)
    assert not [s for s in statuses if s[0] >= 500], statuses
    hot_answers = Counter((r.status, r.error_code) for u, r in results if u.startswith("b"))
    assert hot_answers == {(201, None): stock, (409, "insufficient_stock"): buyers - stock}
    for user in keyed_users:
        answers = [r for u, r in results if u == user]
        paid = [r for r in answers if r.status == 201]
        assert paid, answers
        # The other one is a replay of the same order, or 409 while the first ran.
        assert len({r.body["order_id"] for r in paid}) == 1, [r.body for r in answers]
        assert all(r.status == 201 or r.error_code == "idempotency_key_in_use" for r in answers)
    after = shop_state(committed)
    assert after.stock[hot] == 0
    assert after.orders == stock + keyed
    assert all(count == 1 for count in after.orders_per_user.values())
    assert_conserved({hot: Decimal(stock), side: Decimal(100)}, after)
    assert_invariants(committed)
