"""Health, readiness, request ids, request logs and metrics, through the test client."""

import io
import json
import logging
import time

import pytest
from sqlalchemy import text

from ecommerce.flashsale.server import free_port
from ecommerce.observability.logs import JsonFormatter
from tests.helpers import insert_cart_line, insert_item


def test_liveness_needs_no_database_and_readiness_reports_why(make_app):
    # Nothing listens on this port: the app still starts and is live, not ready.
    app = make_app(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    client = app.test_client()
    live = client.get("/healthz")
    assert live.status_code == 200 and live.get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "1"
    error = ready.get_json()["error"]
    assert error["code"] == "not_ready" and "does not answer" in error["message"]


def test_a_missing_database_is_not_ready(make_app, database_url):
    from sqlalchemy import make_url

    missing = make_url(database_url).set(database="no_such_database_test")
    app = make_app(database_url=missing.render_as_string(hide_password=False))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"]["code"] == "not_ready"


def test_ready_only_at_the_migrations_head(client, connection):
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_data(as_text=True)
    head = ready.get_json()["schema"]
    assert ready.get_json()["status"] == "ready"

    connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    behind = client.get("/readyz")
    assert behind.status_code == 503
    error = behind.get_json()["error"]
    assert error["code"] == "not_ready" and "flask db upgrade" in error["message"]
    assert error["details"] == {"schema": "0001", "expected": head}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("has space", False), ("", False)],
)
def test_the_request_id_is_echoed_or_replaced(client, sent, kept):
    response = client.get("/items/999999", headers={"X-Request-ID": sent} if sent else {})
    assert response.status_code == 404
    echoed = response.headers["X-Request-ID"]
    assert (echoed == sent) is kept
    assert 1 <= len(echoed) <= 128


def test_one_json_log_line_per_request_with_its_id_user_and_error(client, caplog):
    caplog.set_level(logging.DEBUG, logger="ecommerce.request")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())  # formats while the request is served
    logging.getLogger("ecommerce.request").addHandler(handler)
    try:
        client.post("/cart/alice/pay", json={"amount": "1.00"}, headers={"X-Request-ID": "r-1"})
        client.get("/healthz", headers={"X-Request-ID": "probe-1"})
    finally:
        logging.getLogger("ecommerce.request").removeHandler(handler)

    pay, probe = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(pay) == {
        "time", "level", "logger", "message", "request_id", "method", "endpoint", "status",
        "duration_ms", "user_id", "error_code",
    }  # fmt: skip
    assert pay["request_id"] == "r-1" and pay["level"] == "info"
    assert (pay["method"], pay["endpoint"], pay["status"]) == ("POST", "/cart/<user_id>/pay", 409)
    assert (pay["user_id"], pay["error_code"]) == ("alice", "empty_cart")
    assert pay["duration_ms"] >= 0
    assert probe["request_id"] == "probe-1" and probe["level"] == "debug"


def test_a_token_never_reaches_the_log(make_app, caplog):
    from ecommerce.tokens import issue_token

    app = make_app(auth_required=True)
    token = issue_token(app.extensions["settings"].secret_key, "bob", now=time.time())
    caplog.set_level(logging.DEBUG)
    response = app.test_client().get("/cart/bob", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 503)
    assert token not in caplog.text
    line = next(r for r in caplog.records if r.name == "ecommerce.request")
    assert line.fields["user_id"] == "bob"


def test_metrics_count_requests_and_pays(client, connection):
    item = insert_item(connection, "Metric", "2.00", 5)
    insert_cart_line(connection, "carol", item, 1)

    def value(text_format: str, sample: str) -> float:
        for line in text_format.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    before = client.get("/metrics").get_data(as_text=True)
    assert client.post("/cart/carol/pay", json={"amount": "2.00"}).status_code == 201
    assert client.post("/cart/carol/pay", json={"amount": "2.00"}).status_code == 409
    scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["Content-Type"].startswith("text/plain")
    after = scrape.get_data(as_text=True)
    pays = 'shop_http_requests_total{endpoint="/cart/<user_id>/pay",method="POST",status="201"}'
    assert value(after, pays) == value(before, pays) + 1
    paid = 'shop_pays_total{code="",outcome="paid"}'
    assert value(after, paid) == value(before, paid) + 1
    empty = 'shop_pays_total{code="empty_cart",outcome="refused"}'
    assert value(after, empty) == value(before, empty) + 1
    # With cart combining on (the default), an add and a cart read are each a batch.
    add_batches = 'shop_cart_batch_size_count{kind="add"}'
    read_batches = 'shop_cart_batch_size_count{kind="read"}'
    assert client.post("/cart/carol/add", json={"item_id": item, "quantity": 1}).status_code == 200
    assert client.get("/cart/carol/checkout").status_code == 200
    final = client.get("/metrics").get_data(as_text=True)
    assert value(final, add_batches) == value(after, add_batches) + 1
    assert value(final, read_batches) == value(after, read_batches) + 1
    for name in (
        "shop_http_request_duration_seconds_bucket",
        "shop_pay_batch_size_bucket",
        "shop_cart_batch_size_bucket",
        "shop_db_pool_connections_in_use",
        "shop_db_transaction_retries_total",
        "shop_db_timeouts_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in after, name


def test_new_request_ids_are_unique(client):
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(ids) == 50


def test_metrics_read_the_synchronous_standbys_from_the_database(client):
    """A superuser (the test's role) sees pg_stat_replication in full: this
    server has no standby, so none confirms its commits."""
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "\nshop_db_synchronous_standbys 0.0\n" in scrape
