"""Shared test helpers: creating committed data and checking the shop's invariants
from a connection of their own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

TABLES = "items, carts, orders, order_lines, payments, stock_movements, idempotency_keys"


def truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


def insert_item(conn: Connection, name: str, price: str | Decimal, stock: int | Decimal) -> int:
    """An item and its opening stock in the ledger, as the shop itself records them."""
    item_id = conn.execute(
        text("INSERT INTO items (name, price, stock) VALUES (:n, :p, :s) RETURNING id"),
        {"n": name, "p": Decimal(price), "s": Decimal(stock)},
    ).scalar_one()
    if Decimal(stock) > 0:
        conn.execute(
            text(
                "INSERT INTO stock_movements (item_id, quantity, reason) VALUES (:i, :q, 'initial')"
            ),
            {"i": item_id, "q": Decimal(stock)},
        )
    return item_id


def insert_cart_line(conn: Connection, user_id: str, item_id: int, quantity: int) -> None:
    conn.execute(
        text("INSERT INTO carts (user_id, item_id, quantity) VALUES (:u, :i, :q)"),
        {"u": user_id, "i": item_id, "q": quantity},
    )


def create_item(engine: Engine, name: str, price: str, stock: int) -> int:
    with engine.begin() as conn:
        return insert_item(conn, name, price, stock)


def fill_carts(engine: Engine, lines: list[tuple[str, int, int]]) -> None:
    with engine.begin() as conn:
        for user_id, item_id, quantity in lines:
            insert_cart_line(conn, user_id, item_id, quantity)


@dataclass
class Snapshot:
    stock: dict[int, Decimal]
    sold: dict[int, int]
    orders: int
    payments: int
    paid_total: Decimal
    payments_total: Decimal
    orders_without_lines: int
    per_user_orders: dict[str, int] = field(default_factory=dict)


def snapshot(engine: Engine) -> Snapshot:
    """Read the shop's state from a fresh connection (not any session under test)."""
    with engine.connect() as conn:
        stock = dict(conn.execute(text("SELECT id, stock FROM items")).all())
        sold = dict(
            conn.execute(
                text("SELECT item_id, sum(quantity) FROM order_lines GROUP BY item_id")
            ).all()
        )
        orders, paid_total = conn.execute(
            text("SELECT count(*), coalesce(sum(total), 0) FROM orders")
        ).one()
        payments, payments_total = conn.execute(
            text("SELECT count(*), coalesce(sum(amount), 0) FROM payments")
        ).one()
        without_lines = conn.execute(
            text(
                "SELECT count(*) FROM orders o WHERE NOT EXISTS"
                " (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)"
            )
        ).scalar_one()
        per_user = dict(
            conn.execute(text("SELECT user_id, count(*) FROM orders GROUP BY user_id")).all()
        )
    return Snapshot(
        stock, sold, orders, payments, paid_total, payments_total, without_lines, per_user
    )


def assert_conserved(before: dict[int, Decimal], after: Snapshot) -> None:
    """Stock never negative; every unit that left stock is in exactly one order line."""
    for item_id, initial in before.items():
        final = after.stock[item_id]
        assert final >= 0, f"item {item_id} has negative stock {final}"
        assert initial - final == after.sold.get(item_id, 0), (
            f"item {item_id}: stock went {initial} -> {final} but "
            f"{after.sold.get(item_id, 0)} units are in orders"
        )
    assert after.orders == after.payments, "every order has exactly one payment"
    assert after.paid_total == after.payments_total, "payments add up to the order totals"
    assert after.orders_without_lines == 0


def shop_state(conn: Connection) -> tuple:
    """Everything a refused request must leave untouched, in one comparable value."""
    return conn.execute(
        text(
            "SELECT (SELECT json_agg(i ORDER BY id)::text FROM items i),"
            " (SELECT json_agg(c ORDER BY user_id, item_id)::text FROM carts c),"
            " (SELECT count(*) FROM orders), (SELECT count(*) FROM payments),"
            " (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM stock_movements)"
        )
    ).one()


def wait_until_a_backend_waits_on_a_lock(engine: Engine, timeout: float = 10) -> None:
    """Poll pg_stat_activity until some session of this database is blocked on a lock."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while not conn.execute(
            text(
                "SELECT 1 FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).first():
            conn.rollback()
            assert time.monotonic() < deadline, "nothing ever waited on a lock"
            time.sleep(0.01)


def run_together(workers: list[Callable[[], Any]], timeout: float = 60) -> list[Any]:
    """Run every callable on its own thread, released at the same instant by a barrier.

    Returns each callable's result, or the exception it raised, in order.
    """
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(index: int, work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread hung"
    return results


def assert_invariants(engine: Engine) -> None:
    """The shop's own invariant checker finds nothing wrong."""
    from sqlalchemy.orm import Session

    from ecommerce.services.invariants import find_violations

    with Session(engine) as session:
        violations = find_violations(session)
    assert not violations, "\n".join(map(str, violations))
