"""A database that stops answering: a server that accepts the TCP connection and
never speaks, and a PostgreSQL frozen with SIGSTOP in the middle of a storm. On
both gunicorn worker classes every request is answered in bounded time (503 with
Retry-After while the database is silent), sales resume when it answers again,
and nothing acknowledged is lost or doubled. Before the fix, the gevent worker
did not answer /readyz at all (libpq's connect_timeout does not apply in the
asynchronous mode its wait callback uses), and a query on a frozen server waited
for as long as the server stayed frozen."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ecommerce.database import migrations
from ecommerce.database.embedded import (
    ensure_database,
    ensure_server,
    pgdata_path,
    server_url,
    stop_server,
)
from tests.helpers import assert_invariants, commit_item, shop_state, wait_for
from tests.system.server import HttpClient, Server, Shoppers

pytestmark = pytest.mark.slow

WORKER_CLASSES = ["gevent", "gthread"]


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_server_that_never_answers_gets_bounded_503s(worker_class: str, host: str):
    silent = SilentServer()
    server = Server(
        f"postgresql://shop@{host}:{silent.port}/shop",
        GUNICORN_WORKER_CLASS=worker_class,
        WEB_CONCURRENCY="1",
        DB_CONNECT_TIMEOUT_MS="1000",
    ).start()
    try:
        http = HttpClient(server.port, timeout=30, reconnect=False)
        for method, path, body in (
            ("GET", "/readyz", None),
            ("GET", "/cart/ann", None),
            ("POST", "/cart/ann/add", {"item_id": 1, "quantity": 1}),
            ("POST", "/cart/ann/pay", {"amount": "1.00"}),
        ):
            started = time.monotonic()
            answer = http.request(method, path, body)
            took = time.monotonic() - started
            assert answer.status == 503, (path, answer.status, answer.body)
            assert "Retry-After" in answer.headers, path
            # The connect bound (1 s), once per attempt, and the queue bounds.
            assert took < 15, f"{path} took {took:.1f}s"
        assert silent.held, "the shop did try the silent server"
        assert http.request("GET", "/healthz").status == 200  # the worker is alive
    finally:
        server.stop()
        silent.close()


def _postgres_pids(instance: Path) -> list[int]:
    postmaster = int((pgdata_path(instance) / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True
    ).stdout.split()
    return [postmaster, *map(int, children)]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_database_frozen_mid_storm_then_resumed(tmp_path: Path, worker_class: str):
    instance = tmp_path / "pg"
    url = server_url(ensure_server(instance), "shop").render_as_string(hide_password=False)
    ensure_database(url)
    migrations.upgrade(url)
    engine = create_engine(url, pool_pre_ping=True)
    hot = commit_item(engine, "Hot", "1.00", 100_000)
    server = Server(
        url,
        GUNICORN_WORKER_CLASS=worker_class,
        WEB_CONCURRENCY="2",
        LOCK_TIMEOUT_MS="1000",
        STATEMENT_TIMEOUT_MS="2000",
        DB_CONNECT_TIMEOUT_MS="1000",
        DB_POOL_TIMEOUT_MS="1000",
        COMBINING_QUEUE_WAIT_MS="1000",
    ).start()
    shoppers = Shoppers(server.port, hot, 8, keyed=True)
    frozen: list[int] = []
    try:
        shoppers.start()
        wait_for(lambda: shoppers.answered("pay", 201), 30)
        frozen = _postgres_pids(instance)
        frozen_at = time.monotonic()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        # Bounded answers while it is frozen: a 503 arrives.
        wait_for(
            lambda: any(t > frozen_at and s == 503 for t, _, s, _ in list(shoppers.events)), 30
        )
        answered_while_frozen = sum(1 for t, _, _, _ in list(shoppers.events) if t > frozen_at)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        frozen = []
        wait_for(lambda: shoppers.answered("pay", 201, resumed_at), 30)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        shoppers.stop()
        server.stop()

    failures, events, acknowledged = shoppers.failures, shoppers.events, shoppers.acknowledged
    try:
        assert not failures, failures
        statuses = Counter((status, code) for _, _, status, code in events)
        assert set(statuses) <= {(200, None), (201, None), (503, "busy")}, statuses
        assert answered_while_frozen > 0
        # Every acknowledged order exists; nobody paid twice; stock adds up.
        with engine.connect() as conn:
            orders = dict(conn.execute(text("SELECT user_id, id FROM orders")).all())
            per_user = conn.execute(
                text("SELECT count(*) FROM orders GROUP BY user_id HAVING count(*) > 1")
            ).all()
        assert not per_user, "a buyer was charged twice"
        for user, order_id in acknowledged.items():
            assert orders.get(user) == order_id, f"acknowledged order of {user} is missing"
        assert_invariants(engine)
        after = shop_state(engine)
        assert after.sold[hot] == after.orders > 0
    finally:
        engine.dispose()
        stop_server(instance)
