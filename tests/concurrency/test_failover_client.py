"""The shop's side of a failover, on a real server: a server that stops taking
writes (what a pooled connection meets when its node became a standby behind a
pooler: SQLSTATE 25006) gets 503 and readiness says not ready, never a 500; the
pool drops those connections, and once the server takes writes again the next
requests sell. Before, a pay on a standby's connection was a 500 and /readyz
said ready."""

from __future__ import annotations

import contextlib
import socket
import threading
from decimal import Decimal

import psycopg2.extensions
import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy import exc as sa_exc

from ecommerce.database import cooperative
from ecommerce.errors import NotReady, ServiceBusy
from ecommerce.observability import metrics
from ecommerce.services import cart, health, payment
from tests.helpers import assert_invariants, commit_item, shop_state, wait_for

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
    wait_for(
        lambda: before - _backends(private_server), 10, "for the cart reads' old connection to go"
    )


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
def _a_cart_then_forgotten_connections(committed, make_app):
    """A shop whose ann has a cart (so its pool holds connections), then every
    connection made so far forgotten (older than the last death): the shop, its
    client, its pool, and the in-use gauge's offset from the pool's count (the
    gauge is the process's: other shops of this test run count in it; what must
    hold is that it moves with this pool's checked-out count)."""
    item = commit_item(committed, "Hot", "1.00", 10)
    app = make_app(pool_size=2)
    shop = app.extensions["shop"]
    client = app.test_client()
    assert client.post("/cart/ann/add", json={"item_id": item, "quantity": 1}).status_code == 200
    pool = shop.db.engine.pool
    offset = metrics.DB_POOL_IN_USE._value.get() - pool.checkedout()
    shop.db.forget_connections()
    return shop, client, pool, offset


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
    shop, client, pool, offset = _a_cart_then_forgotten_connections(committed, make_app)

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


class _Relay:
    """A TCP port in front of the test's PostgreSQL that can be frozen as a
    SIGSTOPped server is: it still takes TCP connections (the kernel's backlog),
    and nothing it is sent gets an answer any more. Counts the connections it
    took while frozen."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        host = url.query.get("host") or url.host or "127.0.0.1"
        port = url.port or 5432
        if str(host).startswith("/"):
            self.target: tuple = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self.target = (socket.AF_INET, (host, port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.taken_while_frozen = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.sockets.append(client)
                if self.frozen.is_set():
                    self.taken_while_frozen += 1
                    continue  # held, never answered
                family, address = self.target
                server = socket.socket(family)
                server.connect(address)
                self.sockets.append(server)
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.frozen.is_set():  # frozen: taken in, never passed on
                    sink.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for each in self.sockets:
            each.close()


@pytest.fixture
def tight_bounds():
    """This process's wait callback with short bounds (connect 1 s, an answer
    2 s), the previous one back afterwards."""
    previous, connect_s = psycopg2.extensions.get_wait_callback(), cooperative.connect_timeout_s()
    cooperative.install(1.0, 2.0)
    yield
    psycopg2.extensions.set_wait_callback(previous)
    cooperative._bounds["connect_timeout_s"] = connect_s


@pytest.mark.parametrize("pay_combining", [False], ids=["alone"])  # once
def test_after_a_host_falls_silent_new_connections_try_the_others_first(
    database_url, make_app, tight_bounds
):
    """Two hosts listed (two relays to one server, the first of which freezes as
    a SIGSTOPped primary does). Once a connection to the frozen host is found
    dead, the next connection goes to the other host first. Before, it went to
    the host that answered last, the frozen one, and waited its whole connect
    bound there (the frozen host took the TCP connection): after a frozen
    primary, every connection the shop made once the old ones were found dead
    paid that bound first (the drill: sales back 12 s + 3 s after the freeze
    with the default bounds)."""
    first, second = _Relay(database_url), _Relay(database_url)
    user = make_url(database_url).username or "postgres"
    name = make_url(database_url).database
    url = (
        f"postgresql://{user}@127.0.0.1:{first.port},127.0.0.1:{second.port}/{name}"
        "?target_session_attrs=read-write"
    )
    shop = make_app(database_url=url, pool_size=1).extensions["shop"]

    def probe(session):
        return session.execute(text("SELECT 1")).scalar_one()

    try:
        assert shop.transaction(probe, "probe") == 1  # through the first host
        first.frozen.set()
        with pytest.raises(ServiceBusy):
            shop.transaction(probe, "probe")  # its connection: silent, found dead
        assert shop.transaction(probe, "probe") == 1  # a new connection
        assert first.taken_while_frozen == 0, "the new connection tried the frozen host first"
    finally:
        first.close()
        second.close()


def test_a_checkout_whose_reconnect_fails_leaves_the_gauge_true(committed, make_app, pay_combining):
    """A pooled connection refused at checkout (older than the last death) is
    reconnected, and the database does not take the new connection (mid
    failover): SQLAlchemy checks the record back in. Found in review: the
    in-use gauge then counted a checkin for a checkout it never counted (one
    low per failed reconnect)."""
    shop, client, pool, offset = _a_cart_then_forgotten_connections(committed, make_app)

    def no_connection(*_args):
        raise psycopg2.OperationalError("the database does not take connections")

    event.listen(shop.db.engine, "do_connect", no_connection, insert=True)
    try:
        answer = client.post("/cart/ann/pay", json={"amount": "1.00"})
    finally:
        event.remove(shop.db.engine, "do_connect", no_connection)
    assert answer.status_code == 503, (answer.status_code, answer.get_json())
    assert metrics.DB_POOL_IN_USE._value.get() - pool.checkedout() == offset
