"""Bounded waits and retries, forced for real on PostgreSQL."""

import threading
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.errors import ServiceBusy
from ecommerce.services.transactions import TransactionPolicy, run_in_transaction
from tests.helpers import (
    assert_invariants,
    backend_pid,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_until_the_session_has_ended,
)


def test_a_held_row_lock_gives_503_with_retry_after_not_a_hang(make_app, committed):
    app = make_app(
        lock_timeout_ms=200,
        statement_timeout_ms=2000,
        retry_after_s=2,
    )
    client = app.test_client()
    hot = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("u1", hot, 1)])

    with committed.connect() as holder:
        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        busy = client.post("/cart/u1/pay", json={"amount": "1.00"})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "2"
        assert busy.get_json()["error"]["code"] == "busy"
        holder.rollback()

    assert shop_state(committed).orders == 0
    assert client.post("/cart/u1/pay", json={"amount": "1.00"}).status_code == 201
    assert_invariants(committed)


def test_no_pooled_connection_in_time_is_503(make_app, committed):
    app = make_app(pool_size=1, pool_timeout_s=0.2)
    client = app.test_client()
    engine = app.extensions["shop"].db.engine
    with engine.connect():  # the only connection in the pool
        r = client.get("/items")
        assert r.status_code == 503
        assert r.get_json()["error"]["code"] == "busy"
        assert "Retry-After" in r.headers
    assert client.get("/items").status_code == 200


def _two_way_race(engine, policy, work_for, isolation_level=None):
    """Run two units of work whose first attempts meet at a barrier."""
    barrier = threading.Barrier(2)
    attempts = {0: 0, 1: 0}

    def run(index):
        def work(session):
            attempts[index] += 1
            return work_for(index, session, barrier if attempts[index] == 1 else None)

        bind = (
            engine.execution_options(isolation_level=isolation_level) if isolation_level else engine
        )
        return run_in_transaction(lambda: Session(bind), work, policy, name=f"race{index}")

    results = run_together([lambda: run(0), lambda: run(1)])
    return results, attempts


def _stock(engine, *ids):
    with engine.connect() as conn:
        return [
            conn.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": i}).scalar_one()
            for i in ids
        ]


def _lock_in_opposite_orders(a, b):
    def work(index, session, barrier):
        first, second = (a, b) if index == 0 else (b, a)
        session.execute(text("UPDATE items SET stock = stock + 1 WHERE id = :i"), {"i": first})
        if barrier is not None:
            barrier.wait()
        session.execute(text("UPDATE items SET stock = stock + 1 WHERE id = :i"), {"i": second})
        return "done"

    return work


def test_a_real_deadlock_is_retried_and_leaves_exactly_one_effect_each(committed):
    a = commit_item(committed, "A", "1.00", 10)
    b = commit_item(committed, "B", "1.00", 10)
    policy = TransactionPolicy(lock_timeout_ms=10_000, statement_timeout_ms=20_000, retries=3)

    results, attempts = _two_way_race(committed, policy, _lock_in_opposite_orders(a, b))

    assert results == ["done", "done"]
    assert sorted(attempts.values()) == [1, 2]  # PostgreSQL broke the deadlock once
    assert _stock(committed, a, b) == [Decimal(12), Decimal(12)]  # +1 each, per transaction


def test_without_retries_the_deadlock_reaches_the_caller_as_503(committed):
    a = commit_item(committed, "A", "1.00", 10)
    b = commit_item(committed, "B", "1.00", 10)
    policy = TransactionPolicy(lock_timeout_ms=10_000, statement_timeout_ms=20_000, retries=0)

    results, _ = _two_way_race(committed, policy, _lock_in_opposite_orders(a, b))

    assert sorted(type(r).__name__ for r in results) == ["ServiceBusy", "str"]
    assert _stock(committed, a, b) == [Decimal(11), Decimal(11)]


def test_a_real_serialization_failure_is_retried(committed):
    a = commit_item(committed, "A", "1.00", 10)
    policy = TransactionPolicy(lock_timeout_ms=10_000, statement_timeout_ms=20_000, retries=3)

    def work(index, session, barrier):
        seen = session.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": a}).scalar_one()
        if barrier is not None:
            barrier.wait()  # both have taken their snapshot
        session.execute(text("UPDATE items SET stock = :s WHERE id = :i"), {"s": seen + 1, "i": a})
        return "done"

    results, attempts = _two_way_race(committed, policy, work, isolation_level="REPEATABLE READ")

    assert results == ["done", "done"]
    assert sorted(attempts.values()) == [1, 2]
    # Under READ COMMITTED this read-then-write would lose an update (11);
    # REPEATABLE READ plus the retry gives exactly two effects.
    assert _stock(committed, a) == [Decimal(12)]


@pytest.mark.parametrize("retries", [0, 2])
def test_exhausted_serialization_retries_are_503(committed, retries):
    a = commit_item(committed, "A", "1.00", 10)
    policy = TransactionPolicy(lock_timeout_ms=10_000, statement_timeout_ms=20_000, retries=retries)
    calls = 0

    def always_conflicts(session):
        nonlocal calls
        calls += 1
        session.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": a})
        session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$")
        )

    with pytest.raises(ServiceBusy):
        run_in_transaction(lambda: Session(committed), always_conflicts, policy)
    assert calls == retries + 1


def test_every_bound_is_set_per_transaction_and_nothing_stays_on_the_connection(
    make_app, committed
):
    """The bounds ride with each transaction (SET LOCAL), so they hold behind a
    transaction-pooling proxy, and the connection keeps no session state."""
    app = make_app(
        pool_size=1,
        pool_max_overflow=0,
        lock_timeout_ms=250,
        statement_timeout_ms=750,
        idle_in_transaction_timeout_ms=1500,
    )
    shop = app.extensions["shop"]
    names = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")

    def settings(session: Session) -> list[str]:
        return [session.execute(text(f"SHOW {name}")).scalar_one() for name in names]

    assert shop.transaction(settings, "probe") == ["250ms", "750ms", "1500ms"]
    with shop.db.engine.connect() as conn:  # the same pooled connection, outside a use case
        server_defaults = [conn.execute(text(f"SHOW {name}")).scalar_one() for name in names]
        conn.rollback()
    with committed.connect() as fresh:
        assert server_defaults == [fresh.execute(text(f"SHOW {n}")).scalar_one() for n in names]


def test_a_transaction_left_idle_loses_its_locks_after_the_bound(make_app, committed):
    app = make_app(idle_in_transaction_timeout_ms=300)
    shop = app.extensions["shop"]
    hot = commit_item(committed, "Hot", "1.00", 5)

    def stall_holding_the_row(session: Session) -> None:
        session.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        pid = backend_pid(session)
        # A stalled client: the server ends the session meanwhile.
        wait_until_the_session_has_ended(committed, pid)
        session.execute(text("SELECT 1"))

    with pytest.raises(ServiceBusy):
        shop.transaction(stall_holding_the_row, "stall")
    with committed.connect() as other:  # the row is free again
        other.execute(text("SET lock_timeout = '100ms'"))
        other.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        other.rollback()


def test_the_first_requests_of_a_fresh_process_race_for_its_engine_safely(make_app, committed):
    """The engine is built lazily by whichever thread comes first; the others
    must wait for it complete, never get a session bound to nothing."""
    for _ in range(5):
        shop = make_app(pool_size=16).extensions["shop"]
        results = run_together(
            [
                lambda shop=shop: shop.transaction(
                    lambda s: s.execute(text("SELECT 1")).scalar(), "probe"
                )
            ]
            * 16
        )
        assert results == [1] * 16, [r for r in results if r != 1][:1]
