"""The real thing: gunicorn with several workers, over HTTP, on real PostgreSQL."""

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_for,
    wait_until_a_backend_waits_on_a_lock,
)
from tests.system.server import HttpClient, Server

pytestmark = pytest.mark.slow


# Pays, adds and cart reads combined and alone (batches of one), in the default
# gevent workers and in threaded ones (GUNICORN_WORKER_CLASS=gthread).
@pytest.fixture(
    params=[(c, w) for w in ("gevent", "gthread") for c in ("true", "false")],
    ids=lambda p: f"{'combined' if p[0] == 'true' else 'alone'}-{p[1]}",
)
def server(request, database_url, committed):
    combining, worker_class = request.param
    server = Server(
        database_url,
        PAY_COMBINING=combining,
        CART_COMBINING=combining,
        GUNICORN_WORKER_CLASS=worker_class,
    )
    server.flask("db", "upgrade")
    server.flask("seed")
    server.start()
    yield server
    server.stop()


def test_the_design_notes_curl_flow_over_http(server):
    http = HttpClient(server.port)
    # The note's three commands, verbatim but for the port.
    added = http.request("POST", "/cart/user123/add", '{"item_id": 1, "quantity": 2}')
    assert added.status == 200, added.body
    quote = http.request("GET", "/cart/user123/checkout")
    assert quote.status == 200 and quote.body["total"] == "1.00"
    paid = http.request("POST", "/cart/user123/pay", '{"amount": 1.00}')
    assert paid.status == 201, paid.body
    assert paid.body["status"] == "paid"
    assert http.request("GET", "/items/1").body["stock"] == "8.00"
    # Errors are JSON from gunicorn too, never an HTML page.
    missing = http.request("GET", "/no/such/page")
    assert missing.status == 404 and missing.error_code == "not_found"
    http.close()


def test_storm_of_buyers_through_gunicorn(server, committed):
    stock, buyers = 10, 60
    hot = commit_item(committed, "Flash-sale phone", "199.00", stock)

    def buyer(n: int) -> list[tuple[str, int, str | None]]:
        http = HttpClient(server.port)
        user = f"storm{n}"
        steps = []
        r = http.request("POST", f"/cart/{user}/add", {"item_id": hot, "quantity": 1})
        steps.append(("add", r.status, r.error_code))
        if r.status == 200:
            r = http.request("GET", f"/cart/{user}/checkout")
            steps.append(("checkout", r.status, r.error_code))
            r = http.request("POST", f"/cart/{user}/pay", {"amount": "199.00"})
            steps.append(("pay", r.status, r.error_code))
        http.close()
        return steps

    results = run_together([lambda n=n: buyer(n) for n in range(buyers)])

    steps = [step for result in results for step in result]
    assert not [s for s in steps if s[1] >= 500], steps
    outcomes = Counter((name, status, code) for name, status, code in steps if name != "checkout")
    assert outcomes[("pay", 201, None)] == stock, outcomes
    refusals = (
        outcomes[("pay", 409, "insufficient_stock")] + outcomes[("add", 409, "insufficient_stock")]
    )
    assert refusals == buyers - stock, outcomes
    after = shop_state(committed)
    assert after.stock[hot] == 0 and after.orders == stock
    assert_conserved({hot: Decimal(stock)}, after)
    assert_invariants(committed)


@pytest.mark.parametrize("combining", ["true", "false"])
def test_a_request_waiting_on_a_row_lock_does_not_stop_its_gevent_worker(
    database_url, committed, combining
):
    # One gevent worker: psycopg2 waits for PostgreSQL through the hub
    # (ecommerce/database/cooperative.py), so while one pay waits on a row lock, the same
    # process goes on answering requests that need the database. Without it the
    # worker's one thread would sit in the blocked pay until the lock was freed.
    hot = commit_item(committed, "Held", "2.00", 5)
    other = commit_item(committed, "Free", "1.00", 5)
    commit_cart_lines(committed, [("waiter", hot, 1)])
    server = Server(
        database_url,
        WEB_CONCURRENCY="1",
        GUNICORN_WORKER_CLASS="gevent",
        PAY_COMBINING=combining,
        CART_COMBINING=combining,
        LOCK_TIMEOUT_MS="60000",
        STATEMENT_TIMEOUT_MS="90000",
        GUNICORN_TIMEOUT="120",
    ).start()
    paid: list[int] = []
    try:
        with committed.connect() as holder:
            holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
            waiter = threading.Thread(
                target=lambda: paid.append(
                    HttpClient(server.port)
                    .request("POST", "/cart/waiter/pay", {"amount": "2.00"})
                    .status
                )
            )
            waiter.start()
            wait_until_a_backend_waits_on_a_lock(committed)
            http = HttpClient(server.port, timeout=10)
            read = http.request("GET", f"/items/{other}")
            added = http.request("POST", "/cart/other/add", {"item_id": other, "quantity": 1})
            http.close()
            assert read.status == 200 and added.status == 200
            assert paid == []  # answered while the pay still waited, in the same worker
            holder.rollback()
        waiter.join(30)
        assert paid == [201]
    finally:
        server.stop()


def test_a_gevent_worker_bounds_the_pool_and_the_pay_queue(database_url, committed):
    # One gevent worker whose pool (2) is taken by a pay batch and an add, both
    # waiting on a row lock: a read that needs a connection and a pay that queues
    # behind the batch are each answered 503 with Retry-After once their own
    # bound runs out, while the lock is still held (no hang), and the blocked
    # requests complete once it is released.
    hot = commit_item(committed, "Held", "2.00", 5)
    other = commit_item(committed, "Free", "1.00", 5)
    commit_cart_lines(committed, [("batch", hot, 1), ("queued", other, 1)])
    server = Server(
        database_url,
        WEB_CONCURRENCY="1",
        GUNICORN_WORKER_CLASS="gevent",
        PAY_COMBINING="true",
        DB_POOL_SIZE="2",
        DB_POOL_TIMEOUT_MS="300",
        COMBINING_QUEUE_WAIT_MS="300",
        LOCK_TIMEOUT_MS="20000",
        STATEMENT_TIMEOUT_MS="25000",
    ).start()
    answers: dict[str, int] = {}

    def call(name: str, method: str, path: str, body=None) -> None:
        answers[name] = HttpClient(server.port).request(method, path, body).status

    try:
        with committed.connect() as holder:
            holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
            blocked = [
                threading.Thread(
                    target=call, args=("pay", "POST", "/cart/batch/pay", {"amount": "2.00"})
                ),
                # The cart row's foreign key check waits for the item row too.
                threading.Thread(
                    target=call,
                    args=("add", "POST", "/cart/adder/add", {"item_id": hot, "quantity": 1}),
                ),
            ]
            for t in blocked:
                t.start()
            wait_until_a_backend_waits_on_a_lock(committed, count=2)
            http = HttpClient(server.port, timeout=10)
            read = http.request("GET", f"/items/{other}")
            queued = http.request("POST", "/cart/queued/pay", {"amount": "1.00"})
            http.close()
            assert (read.status, read.error_code) == (503, "busy"), read.body
            assert (queued.status, queued.error_code) == (503, "busy"), queued.body
            assert read.headers["Retry-After"] and queued.headers["Retry-After"]
            assert answers == {}  # the blocked ones still wait on the lock
            holder.rollback()
        for t in blocked:
            t.join(30)
        assert answers == {"pay": 201, "add": 200}
    finally:
        server.stop()
    assert_invariants(committed)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of this host's TCP sockets on local ``port`` in ``state`` (0A: listening,
    01: established), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(int(fields[9]))
    return found


def _listeners_per_worker(server: Server) -> dict[int, set[int]]:
    """Each worker's listening sockets, once every worker has one."""

    def held() -> dict[int, set[int]] | None:
        listening = _tcp_inodes(server.port, "0A")
        found = {pid: _socket_inodes(pid) & listening for pid in server.worker_pids()}
        return found if len(found) == 2 and all(found.values()) else None

    return wait_for(held, 20, "for each worker's listening socket", interval=0.1)


@pytest.mark.parametrize("reuse_port", ["true", "false"])
def test_each_worker_listens_on_a_socket_of_its_own(database_url, reuse_port):
    # With SO_REUSEPORT (the default) the kernel spreads new connections over the
    # workers' own sockets; with one shared socket (GUNICORN_REUSE_PORT=false) a
    # burst could all land on the worker that woke first.
    server = Server(database_url, WEB_CONCURRENCY="2", GUNICORN_REUSE_PORT=reuse_port).start()
    clients: list[HttpClient] = []
    try:
        listeners = _listeners_per_worker(server)
        first, second = listeners.values()
        if reuse_port == "false":
            assert first == second and len(first) == 1, listeners  # the master's socket
            return
        assert first.isdisjoint(second), listeners
        for _ in range(40):  # kept open: each holds its connection to one worker
            client = HttpClient(server.port)
            assert client.request("GET", "/healthz").status == 200
            clients.append(client)
        established = _tcp_inodes(server.port, "01")
        per_worker = {pid: len(_socket_inodes(pid) & established) for pid in listeners}
        assert sum(per_worker.values()) == 40, per_worker
        # Binomial(40, 1/2): below 5 on either side has odds of about 1 in 10^6.
        assert min(per_worker.values()) >= 5, per_worker
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_a_second_server_on_the_same_port_is_refused(database_url):
    # SO_REUSEPORT would let a second server of the same user bind beside the
    # first and quietly take a share of its connections; the master's plain
    # bind before the workers start refuses the port instead.
    first = Server(database_url, WEB_CONCURRENCY="2").start()
    try:
        second = Server(database_url, WEB_CONCURRENCY="2")
        second.port = first.port
        second.env["GUNICORN_BIND"] = f"127.0.0.1:{first.port}"
        with contextlib.suppress(RuntimeError):  # its probe may reach the first one
            second.start()
        assert second.process is not None
        assert second.process.wait(20) == 1, "the second server must not start"
        second.stop()
        http = HttpClient(first.port)
        assert http.request("GET", "/healthz").status == 200
        http.close()
    finally:
        first.stop()


def test_a_silent_connection_is_closed_after_the_keep_alive(database_url):
    """A connection that sends nothing, one that stops in the middle of its
    request's head, and one idle after its answer are each closed once
    ``keepalive`` (5 s) has passed without a request: no greenlet waits on a
    silent client for ever."""
    server = Server(database_url, WEB_CONCURRENCY="1", GUNICORN_WORKER_CLASS="gevent").start()
    try:
        silent, half, idle = (socket.create_connection(("127.0.0.1", server.port)) for _ in "abc")
        half.sendall(b"GET /items HTTP/1.1\r\nHost: x\r\n")
        idle.sendall(b"GET /items HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(10)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        for conn in (silent, half, idle):
            conn.settimeout(30)  # the bound under test is 5 s; this only stops a hang
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            assert b"200 OK" not in data  # closed, not answered
            conn.close()
    finally:
        server.stop()


def test_a_connection_in_use_outlives_the_keep_alive(database_url):
    """The keep-alive bound is on silence, not on a connection's age: a client
    asking once a second (a place in the waiting room polling, say) keeps its
    connection past keepalive (5 s), each wait timed afresh."""
    server = Server(database_url, WEB_CONCURRENCY="1", GUNICORN_WORKER_CLASS="gevent").start()
    try:
        http = HttpClient(server.port, reconnect=False)
        for _ in range(7):
            assert http.request("GET", "/healthz").status == 200
            time.sleep(1)  # the client's own pace, well inside the bound
        http.close()
    finally:
        server.stop()


def test_a_trusted_proxys_https_makes_the_console_cookie_secure(database_url):
    """X-Forwarded-Proto from a trusted proxy (gunicorn's forwarded_allow_ips,
    127.0.0.1 by default) sets the scheme, as gunicorn's own parser does."""
    server = Server(database_url, WEB_CONCURRENCY="1", GUNICORN_WORKER_CLASS="gevent")
    server.flask("db", "upgrade")
    server.start()
    try:

        def sign_in(headers: dict[str, str]) -> str:
            url = server.flask("console-link").stdout.split()[-1]
            path = url[url.index("/console/login") :]
            answer = HttpClient(server.port).request("GET", path, headers=headers)
            assert answer.status == 303, answer.body
            return answer.headers["Set-Cookie"]

        assert "Secure" in sign_in({"X-Forwarded-Proto": "https"})
        assert "Secure" not in sign_in({"X-Forwarded-Proto": "http"})
        assert "Secure" not in sign_in({})
    finally:
        server.stop()
