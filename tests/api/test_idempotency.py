"""Idempotency-Key on add and pay (rolled back per test; races are in tests/concurrency)."""

from sqlalchemy import text

from tests.helpers import insert_cart_line, insert_item


def counts(connection):
    return connection.execute(
        text(
            "SELECT (SELECT count(*) FROM orders), (SELECT coalesce(sum(quantity), 0) FROM carts),"
            " (SELECT count(*) FROM idempotency_keys)"
        )
    ).one()


def test_pay_replay_returns_the_first_response_byte_for_byte(client, connection):
    a = insert_item(connection, "A", "2.00", 10)
    insert_cart_line(connection, "u1", a, 1)
    headers = {"Idempotency-Key": "pay-7f3a"}

    first = client.post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    # The cart fills again: a new pay without the key would buy again.
    insert_cart_line(connection, "u1", a, 1)
    replay = client.post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)

    assert replay.status_code == 201
    assert replay.get_data() == first.get_data()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert counts(connection)[0] == 1
    # The key did not eat the refilled cart.
    assert client.post("/cart/u1/pay", json={"amount": "2.00"}).status_code == 201


def test_add_replay_adds_once(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    headers = {"Idempotency-Key": "add-1"}
    first = client.post("/cart/u1/add", json={"item_id": a, "quantity": 2}, headers=headers)
    again = client.post("/cart/u1/add", json={"quantity": 2, "item_id": a}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.get_data() == first.get_data()  # same request, keys in another order
    assert counts(connection)[1] == 2


def test_same_key_different_body_is_422(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    headers = {"Idempotency-Key": "k1"}
    assert (
        client.post("/cart/u1/add", json={"item_id": a, "quantity": 1}, headers=headers).status_code
        == 200
    )
    before = counts(connection)
    other = client.post("/cart/u1/add", json={"item_id": a, "quantity": 3}, headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"
    # Another endpoint is another request too.
    pay = client.post("/cart/u1/pay", json={"amount": "1.00"}, headers=headers)
    assert pay.status_code == 422
    assert counts(connection) == before


def test_keys_are_scoped_to_the_user(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    headers = {"Idempotency-Key": "shared"}
    for user in ("u1", "u2"):
        r = client.post(f"/cart/{user}/add", json={"item_id": a, "quantity": 1}, headers=headers)
        assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers
    assert counts(connection)[1] == 2


def test_refused_requests_are_not_stored(client, connection):
    a = insert_item(connection, "A", "1.00", 1)
    insert_cart_line(connection, "u1", a, 2)
    headers = {"Idempotency-Key": "retry-me"}
    refused = client.post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)
    assert refused.status_code == 409
    assert counts(connection)[2] == 0
    connection.execute(text("UPDATE items SET stock = 5 WHERE id = :a"), {"a": a})
    connection.execute(
        text("INSERT INTO stock_movements (item_id, quantity, reason) VALUES (:a, 4, 'restock')"),
        {"a": a},
    )
    assert client.post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers).status_code == 201


def test_bad_keys_are_400_and_change_nothing(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    before = counts(connection)
    for bad in ("", " ", "x" * 256, "é", "has space"):
        r = client.post(
            "/cart/u1/add", json={"item_id": a, "quantity": 1}, headers={"Idempotency-Key": bad}
        )
        assert r.status_code == 400, bad
        assert r.get_json()["error"]["code"] == "invalid_request"
    assert counts(connection) == before


def test_structured_field_quotes_are_accepted(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    r1 = client.post(
        "/cart/u1/add", json={"item_id": a, "quantity": 1}, headers={"Idempotency-Key": '"abc"'}
    )
    r2 = client.post(
        "/cart/u1/add", json={"item_id": a, "quantity": 1}, headers={"Idempotency-Key": "abc"}
    )
    assert r2.headers["Idempotent-Replayed"] == "true" and r2.get_data() == r1.get_data()


def test_expired_keys_run_afresh_and_are_pruned(client, runner, connection):
    a = insert_item(connection, "A", "1.00", 10)
    headers = {"Idempotency-Key": "old"}
    client.post("/cart/u1/add", json={"item_id": a, "quantity": 1}, headers=headers)
    connection.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"))
    again = client.post("/cart/u1/add", json={"item_id": a, "quantity": 1}, headers=headers)
    assert "Idempotent-Replayed" not in again.headers
    assert counts(connection)[1] == 2

    client.post(
        "/cart/u1/add", json={"item_id": a, "quantity": 1}, headers={"Idempotency-Key": "k2"}
    )
    connection.execute(
        text(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k2'"
        )
    )
    pruned = runner.invoke(args=["prune-idempotency-keys"])
    assert pruned.exit_code == 0 and "deleted 1 " in pruned.output
    assert connection.execute(text("SELECT key FROM idempotency_keys")).scalars().all() == ["old"]
