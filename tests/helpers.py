"""Shared test helpers.

* Factories: ``insert_*`` write inside the caller's connection and transaction
  (rolled back with the test); ``commit_*`` write and commit on an engine (for
  tests whose threads or processes need to see the data).
* One reader of the shop's state, :func:`shop_state`, from a connection that
  is not any session under test.
* :func:`run_together` releases threads at one instant through a barrier.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ecommerce.database.engine import Database
from ecommerce.models import table_names
from ecommerce.services.invariants import find_violations

T = TypeVar("T")


def truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(table_names())} RESTART IDENTITY CASCADE"))


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


def set_sale_rules(
    conn: Connection,
    item_id: int,
    *,
    per_user_limit: int | None = None,
    starts_in_s: float | None = None,
    ends_in_s: float | None = None,
) -> None:
    """Give an item a per-buyer limit and a sale window relative to now."""
    conn.execute(
        text(
            "UPDATE items SET per_user_limit = :limit,"
            " sale_starts_at = now() + make_interval(secs => CAST(:starts AS float)),"
            " sale_ends_at = now() + make_interval(secs => CAST(:ends AS float))"
            " WHERE id = :i"
        ),
        {"limit": per_user_limit, "starts": starts_in_s, "ends": ends_in_s, "i": item_id},
    )


def insert_cart_line(conn: Connection, user_id: str, item_id: int, quantity: int) -> None:
    conn.execute(
        text("INSERT INTO carts (user_id, item_id, quantity) VALUES (:u, :i, :q)"),
        {"u": user_id, "i": item_id, "q": quantity},
    )


def commit_item(engine: Engine, name: str, price: str, stock: int) -> int:
    with engine.begin() as conn:
        return insert_item(conn, name, price, stock)


def commit_cart_lines(engine: Engine, lines: list[tuple[str, int, int]]) -> None:
    with engine.begin() as conn:
        for user_id, item_id, quantity in lines:
            insert_cart_line(conn, user_id, item_id, quantity)


@dataclass(frozen=True)
class ShopState:
    """Everything the shop holds, in one comparable value."""

    stock: dict[int, Decimal]
    sold: dict[int, int]
    carts: dict[tuple[str, int], int]
    orders: int
    order_lines: int
    payments: int
    charged_orders: int
    charged_total: Decimal
    payments_total: Decimal
    orders_without_lines: int
    orders_per_user: dict[str, int]
    idempotency_keys: int
    stock_movements: int


def shop_state(source: Engine | Connection) -> ShopState:
    """Read the shop's state; from an engine, on a fresh connection of its own."""
    if isinstance(source, Engine):
        with source.connect() as conn:
            return shop_state(conn)
    conn = source

    def pairs(sql: str) -> dict:
        return {row[0]: row[1] for row in conn.execute(text(sql))}

    def one(sql: str) -> Any:
        return conn.execute(text(sql)).one()

    orders = one("SELECT count(*) FROM orders")[0]
    # Orders charged (paid, or paid and refunded since): each has one payment.
    charged, charged_total = one(
        "SELECT count(*), coalesce(sum(total), 0) FROM orders WHERE status IN ('paid', 'refunded')"
    )
    payments, payments_total = one("SELECT count(*), coalesce(sum(amount), 0) FROM payments")
    return ShopState(
        stock=pairs("SELECT id, stock FROM items"),
        # Units in orders that hold stock; ended orders gave theirs back.
        sold=pairs(
            "SELECT l.item_id, sum(l.quantity) FROM order_lines l"
            " JOIN orders o ON o.id = l.order_id WHERE o.status IN ('pending', 'paid')"
            " GROUP BY l.item_id"
        ),
        carts={
            (user_id, item_id): quantity
            for user_id, item_id, quantity in conn.execute(
                text("SELECT user_id, item_id, quantity FROM carts")
            )
        },
        orders=orders,
        order_lines=one("SELECT count(*) FROM order_lines")[0],
        payments=payments,
        charged_orders=charged,
        charged_total=charged_total,
        payments_total=payments_total,
        orders_without_lines=one(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS"
            " (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)"
        )[0],
        orders_per_user=pairs("SELECT user_id, count(*) FROM orders GROUP BY user_id"),
        idempotency_keys=one("SELECT count(*) FROM idempotency_keys")[0],
        stock_movements=one("SELECT count(*) FROM stock_movements")[0],
    )


def assert_conserved(before: dict[int, Decimal], after: ShopState) -> None:
    """Stock never negative; every unit that left stock is in exactly one order line."""
    for item_id, initial in before.items():
        final = after.stock[item_id]
        assert final >= 0, f"item {item_id} has negative stock {final}"
        assert initial - final == after.sold.get(item_id, 0), (
            f"item {item_id}: stock went {initial} -> {final} but "
            f"{after.sold.get(item_id, 0)} units are in orders"
        )
    assert after.charged_orders == after.payments, "every charged order has exactly one payment"
    assert after.charged_total == after.payments_total, "payments add up to the order totals"
    assert after.orders_without_lines == 0


def assert_invariants(engine: Engine) -> None:
    """The shop's own invariant checker finds nothing wrong."""
    with Session(engine) as session:
        violations = find_violations(session, dt.datetime.now(dt.UTC))
    assert not violations, "\n".join(map(str, violations))


def wait_for(
    predicate: Callable[[], T], timeout: float = 30, what: str = "", interval: float = 0.01
) -> T:
    """Poll ``predicate`` until it returns something truthy (an observable
    event), and return that; fail after ``timeout``, saying ``what`` was awaited.
    The tests' one way to wait."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting {what or 'for the event'}"
        time.sleep(interval)
    return value


@contextmanager
def held_by_another_transaction(engine: Engine, lock_sql: str, **params: Any) -> Iterator[None]:
    """The rows ``lock_sql`` (a SELECT ... FOR UPDATE) locks, held by a
    transaction of another connection until the block ends."""
    with engine.connect() as conn, conn.begin():
        conn.execute(text(lock_sql), params)
        yield


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``work`` on a thread of its own; returns a function that waits for it
    and gives its result (or the exception it raised)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # handed to the test, which inspects it
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout: float = 60) -> Any:
        thread.join(timeout)
        assert outcome, "the thread did not finish"
        return outcome[0]

    return result


def wait_until_a_backend_waits_on_a_lock(
    engine: Engine, timeout: float = 10, count: int = 1
) -> None:
    """Poll pg_stat_activity until ``count`` sessions of this database are blocked on a lock."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:

        def enough() -> bool:
            conn.rollback()  # a fresh snapshot of pg_stat_activity each time
            return conn.execute(waiting).scalar_one() >= count

        wait_for(enough, timeout, f"for {count} sessions to wait on a lock")


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


def age_reservations(engine: Engine, seconds: float) -> None:
    """Move every pending order's expiry ``seconds`` earlier, as if that much time
    had passed (the database keeps the reservations' clock)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE orders SET expires_at = expires_at - make_interval(secs => :s)"
                " WHERE status = 'pending'"
            ),
            {"s": seconds},
        )


@contextmanager
def sessions_bound_to(db: Database, connection: Connection) -> Iterator[None]:
    """Every session the shop makes joins ``connection``'s transaction, its
    commits becoming savepoints (SQLAlchemy's "joining a Session into an
    external transaction" recipe); the test rolls the transaction back. Set
    through the database's own seam, its session factory."""
    db.session_factory = sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    try:
        yield
    finally:
        db.session_factory = None


def backend_pid(session: Session | Connection) -> int:
    """The server process of the session's connection (inside a transaction: also
    behind a transaction-pooling proxy, which keeps it until the transaction ends)."""
    return session.execute(text("SELECT pg_backend_pid()")).scalar_one()


def wait_until_the_session_has_ended(engine: Engine, pid: int, timeout: float = 10) -> None:
    """Poll pg_stat_activity, on a connection of its own, until the server process
    ``pid`` is gone: the server ended that session (its locks released first)."""
    alive = text("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :pid)")
    with engine.connect() as conn:

        def gone() -> bool:
            conn.rollback()  # a fresh snapshot of pg_stat_activity each time
            return not conn.execute(alive, {"pid": pid}).scalar_one()

        wait_for(gone, timeout, f"for the server to end the session of backend {pid}")


def end_the_session(engine: Engine, pid: int) -> None:
    """End server process ``pid``'s session from another connection (as an
    operator or a restart would) and wait until the server has ended it."""
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        other.commit()
    wait_until_the_session_has_ended(engine, pid)


def queue_behind_a_held_batch(
    shop: Any,
    combiner: str,
    engine: Engine,
    lock_sql: str,
    first: Callable[[], Any],
    rest: list[Callable[[], Any]],
    **params: Any,
) -> list[Any]:
    """Run ``first`` while another transaction holds the rows ``lock_sql``
    locks, until its batch waits on them (pg_stat_activity says so); then
    ``rest``, each on a thread of its own, until all of them wait in the queue
    of the shop's ``combiner``; then end the holding transaction, so that the
    rest form the next batch together. Returns each one's result or exception,
    ``first``'s first."""
    with held_by_another_transaction(engine, lock_sql, **params):
        results = [in_thread(first)]
        wait_until_a_backend_waits_on_a_lock(engine)
        results += [in_thread(work) for work in rest]
        wait_for(lambda: shop.waiting_in(combiner) >= len(rest), 10, "for the rest to queue")
    return [result(60) for result in results]


@contextmanager
def database_fault(engine: Engine, name: str, table: str, events: str, body: str) -> Iterator[None]:
    """A real fault in PostgreSQL until the block ends: a row trigger ``name``
    on ``table`` (``events``: "INSERT OR UPDATE", ...) running the PL/pgSQL
    ``body`` before each row is written (it ends with RETURN NEW)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" {body} END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE {events} ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))


def refused_by_the_database(
    engine: Engine, table: str, user_id: str
) -> contextlib.AbstractContextManager[None]:
    """A real fault: PostgreSQL refuses every row of ``table`` written for
    ``user_id`` (a trigger raising an error) until the block ends."""
    body = (
        f"IF NEW.user_id = '{user_id}' THEN"
        " RAISE EXCEPTION 'this row cannot be written'; END IF; RETURN NEW;"
    )
    return database_fault(engine, f"test_refuse_{table}", table, "INSERT OR UPDATE", body)


def bearer(app: Any, user: str, *, admin: bool = False, ttl_s: int = 600) -> dict[str, str]:
    """An Authorization header for ``user`` (an admin's with ``admin``), signed
    with ``app``'s secret and issued at its shop's clock."""
    from ecommerce.tokens import issue_token

    secret = app.extensions["settings"].secret_key
    now = app.extensions["shop"].clock().timestamp()
    return {"Authorization": f"Bearer {issue_token(secret, user, ttl_s, admin=admin, now=now)}"}


class Clock:
    """A shop's clock for a test (``shop.clock = Clock()``): frozen at ``start``
    (default: now), or with ``running`` the wall clock's time; either way
    moved on by :meth:`advance`, so no test waits for an expiry."""

    def __init__(self, start: dt.datetime | None = None, *, running: bool = False) -> None:
        self.start = start or dt.datetime.now(dt.UTC)
        self.running = running
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        base = dt.datetime.now(dt.UTC) if self.running else self.start
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


class BatchSizes(dict[str, list[int]]):
    """The size of every batch a shop runs, by kind ("pay", "add", "read"):
    ``shop.batch_observer = sizes.record``."""

    def record(self, kind: str, size: int) -> None:
        self.setdefault(kind, []).append(size)
