"""Operating the real thing: readiness while the database comes and goes, metrics
added up across gunicorn workers, JSON logs, and a graceful shutdown mid-batch."""

import json
import os
import signal
import threading
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, make_url, text

from ecommerce.database import migrations
from ecommerce.database.embedded import ensure_database
from tests.helpers import (
    assert_conserved,
    assert_invariants,
    commit_cart_lines,
    commit_item,
    shop_state,
    wait_until_a_backend_waits_on_a_lock,
)
from tests.system.server import HttpClient, Server, wait_until_accepted, wait_until_refused

pytestmark = pytest.mark.slow


def _fresh(port: int, method: str, path: str, body=None, headers=None):
    """One request on a connection of its own (so workers share the requests)."""
    http = HttpClient(port, reconnect=False)
    try:
        return http.request(method, path, body, headers)
    finally:
        http.close()


def _sample(scrape: str, sample: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_live_at_once_ready_once_the_database_is_there(database_url):
    url = make_url(database_url).set(database=f"{make_url(database_url).database}_ready")
    rendered = url.render_as_string(hide_password=False)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    try:
        with Server(rendered) as server:
            assert _fresh(server.port, "GET", "/healthz").status == 200
            not_ready = _fresh(server.port, "GET", "/readyz")
            assert not_ready.status == 503 and not_ready.error_code == "not_ready"

            ensure_database(rendered)
            behind = _fresh(server.port, "GET", "/readyz")
            assert behind.status == 503 and "flask db upgrade" in behind.body["error"]["message"]

            migrations.upgrade(rendered)
            for _ in range(server_workers := 3):  # every worker, not just one, is ready now
                ready = _fresh(server.port, "GET", "/readyz")
                assert ready.status == 200, (server_workers, ready.body)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


def test_metrics_add_up_across_workers_and_logs_are_json(database_url, committed, tmp_path):
    hot = commit_item(committed, "Hot", "3.00", 10)
    commit_cart_lines(committed, [(f"m{n}", hot, 1) for n in range(6)])
    log_path = tmp_path / "gunicorn.log"
    with Server(database_url, log_path=log_path, WEB_CONCURRENCY="3", LOG_LEVEL="info") as server:
        probes = '{endpoint="/healthz",method="GET",status="200"}'
        before = _fresh(server.port, "GET", "/metrics").body.decode()
        for _ in range(40):
            assert _fresh(server.port, "GET", "/healthz").status == 200
        for n in range(6):
            paid = _fresh(
                server.port,
                "POST",
                f"/cart/m{n}/pay",
                {"amount": "3.00"},
                {"X-Request-ID": f"m-{n}"},
            )
            assert paid.status == 201 and paid.headers["X-Request-ID"] == f"m-{n}"
        after = _fresh(server.port, "GET", "/metrics").body.decode()
        pids = server.worker_pids()
    assert len(pids) == 3
    name = "shop_http_requests_total"
    assert _sample(after, name + probes) - _sample(before, name + probes) == 40
    assert _sample(after, 'shop_pays_total{code="",outcome="paid"}') == 6
    assert _sample(after, "shop_pay_batch_size_count") >= 1
    assert "shop_db_pool_connections_in_use" in after

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    requests = [line for line in lines if line["logger"] == "ecommerce.request"]
    assert sorted(line["request_id"] for line in requests) == [f"m-{n}" for n in range(6)]
    assert all(line["status"] == 201 and line["user_id"].startswith("m") for line in requests)


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_sigterm_mid_batch_answers_every_request_in_flight(database_url, committed, worker_class):
    hot = commit_item(committed, "Hot", "1.00", 100)
    buyers = [f"g{n}" for n in range(10)]
    commit_cart_lines(committed, [(u, hot, 1) for u in buyers])
    server = Server(
        database_url,
        PAY_COMBINING="true",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="8",
        GUNICORN_WORKER_CLASS=worker_class,
    )
    server.start()
    answers: dict[str, object] = {}
    client_ports: list[int] = []  # of the buyers' connections, as they open

    def pay(user: str) -> None:
        http = HttpClient(server.port, reconnect=False)
        try:
            client_ports.append(http.connect())
            answers[user] = http.request("POST", f"/cart/{user}/pay", {"amount": "1.00"})
        except Exception as error:  # recorded and asserted on below
            answers[user] = error
        finally:
            http.close()

    try:
        with committed.connect() as holder:
            holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
            threads = [threading.Thread(target=pay, args=(u,)) for u in buyers]
            for t in threads:
                t.start()
            wait_until_a_backend_waits_on_a_lock(committed)  # a batch holds its buyers
            # Every buyer's connection taken by a worker (none left in the kernel's
            # backlog): the rest are in flight behind the batch or in the other
            # worker's, all of them for the graceful stop to answer.
            wait_until_accepted(server.port, client_ports, len(buyers))
            os.kill(server.process.pid, signal.SIGTERM)
            wait_until_refused(server.port)  # new connections are refused meanwhile
            holder.rollback()  # the batches go on to commit
        for t in threads:
            t.join(30)
        assert server.process.wait(30) == 0
    finally:
        server.stop()

    assert all(getattr(a, "status", None) == 201 for a in answers.values()), answers
    after = shop_state(committed)
    assert after.orders == len(buyers) and after.stock[hot] == 100 - len(buyers)
    assert_conserved({hot: Decimal(100)}, after)
    assert_invariants(committed)
