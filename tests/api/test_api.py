"""The HTTP API through Flask's test client, on real PostgreSQL (rolled back per test)."""

import json

import pytest
from sqlalchemy import text

from tests.helpers import insert_cart_line, insert_item, shop_state


@pytest.fixture
def seeded(runner):
    assert runner.invoke(args=["seed"]).exit_code == 0


def item_id(connection, name):
    return connection.execute(
        text("SELECT id FROM items WHERE name = :n"), {"n": name}
    ).scalar_one()


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def test_the_design_notes_curl_flow(client, seeded, connection):
    apple = item_id(connection, "Apple")
    added = client.post(
        "/cart/user123/add",
        data=f'{{"item_id": {apple}, "quantity": 2}}',
        headers={"Content-Type": "application/json"},
    )
    assert added.status_code == 200
    assert added.get_json()["total"] == "1.00"

    quote = client.get("/cart/user123/checkout")
    assert quote.status_code == 200
    assert quote.get_json()["total"] == "1.00"
    assert quote.get_json()["can_pay"] is True
    assert quote.get_json()["lines"][0]["in_stock"] is True

    paid = client.post(
        "/cart/user123/pay",
        data='{"amount": 1.00}',
        headers={"Content-Type": "application/json"},
    )
    assert paid.status_code == 201, paid.get_data(as_text=True)
    order = paid.get_json()
    assert order["status"] == "paid" and order["total"] == "1.00"
    assert order["lines"] == [
        {
            "item_id": apple,
            "name": "Apple",
            "quantity": 2,
            "unit_price": "0.50",
            "line_total": "1.00",
        }
    ]
    assert client.get(f"/items/{apple}").get_json()["stock"] == "8.00"
    assert client.get("/cart/user123").get_json() == {
        "user_id": "user123",
        "lines": [],
        "total": "0.00",
    }

    fetched = client.get(f"/orders/{order['order_id']}")
    assert fetched.status_code == 200 and fetched.get_json() == order
    history = client.get("/users/user123/orders").get_json()
    assert [o["order_id"] for o in history["orders"]] == [order["order_id"]]


def test_items(client, seeded):
    items = client.get("/items").get_json()
    assert [(i["name"], i["price"], i["stock"]) for i in items] == [
        ("Apple", "0.50", "10.00"),
        ("Banana", "0.30", "10.00"),
        ("Orange", "0.70", "10.00"),
    ]
    first = client.get(f"/items/{items[0]['id']}").get_json()
    assert first == items[0]
    assert_error(client.get("/items/999999"), 404, "not_found")
    assert_error(client.get("/items/99999999999999999999"), 404, "not_found")
    assert_error(client.get("/items/abc"), 404, "not_found")


def test_amount_may_be_a_string_and_is_exact(client, connection):
    a = insert_item(connection, "Dime", "0.10", 10)
    insert_cart_line(connection, "u1", a, 3)
    error = assert_error(
        client.post("/cart/u1/pay", json={"amount": "0.3000001"}), 400, "invalid_request"
    )
    assert "decimal" in error["message"]
    mismatch = assert_error(
        client.post("/cart/u1/pay", data='{"amount": 0.31}'), 422, "amount_mismatch"
    )
    assert mismatch["details"] == {"expected": "0.30", "received": "0.31"}
    # 0.1 * 3 is exactly 0.30: no float rounding anywhere.
    assert client.post("/cart/u1/pay", data='{"amount": "0.30"}').status_code == 201


def test_add_to_existing_line_and_remove(client, connection):
    a = insert_item(connection, "A", "2.50", 10)
    b = insert_item(connection, "B", "1.00", 10)
    client.post("/cart/u1/add", json={"item_id": a, "quantity": 1})
    client.post("/cart/u1/add", json={"item_id": b, "quantity": 1})
    cart = client.post("/cart/u1/add", json={"item_id": a, "quantity": 2}).get_json()
    assert [(line["item_id"], line["quantity"], line["line_total"]) for line in cart["lines"]] == [
        (a, 3, "7.50"),
        (b, 1, "1.00"),
    ]
    assert cart["total"] == "8.50"
    after = client.delete(f"/cart/u1/items/{a}")
    assert after.status_code == 200
    assert [line["item_id"] for line in after.get_json()["lines"]] == [b]
    assert_error(client.delete(f"/cart/u1/items/{a}"), 404, "not_found")


def test_add_beyond_stock_is_409_and_changes_nothing(client, connection):
    a = insert_item(connection, "A", "1.00", 3)
    client.post("/cart/u1/add", json={"item_id": a, "quantity": 2})
    before = shop_state(connection)
    error = assert_error(
        client.post("/cart/u1/add", json={"item_id": a, "quantity": 2}), 409, "insufficient_stock"
    )
    assert error["details"]["items"][0]["available"] == "3.00"
    assert shop_state(connection) == before


def test_add_unknown_item_is_404(client):
    assert_error(
        client.post("/cart/u1/add", json={"item_id": 424242, "quantity": 1}), 404, "not_found"
    )


def test_pay_refusals(client, connection):
    assert_error(client.post("/cart/u1/pay", json={"amount": "0"}), 409, "empty_cart")
    a = insert_item(connection, "A", "1.00", 1)
    b = insert_item(connection, "B", "1.00", 0)
    insert_cart_line(connection, "u1", a, 2)
    insert_cart_line(connection, "u1", b, 1)
    before = shop_state(connection)
    error = assert_error(
        client.post("/cart/u1/pay", json={"amount": "3.00"}), 409, "insufficient_stock"
    )
    assert {s["name"] for s in error["details"]["items"]} == {"A", "B"}
    assert shop_state(connection) == before

    quote = client.get("/cart/u1/checkout").get_json()
    assert quote["can_pay"] is False
    assert [line["in_stock"] for line in quote["lines"]] == [False, False]


BAD_BODIES = [
    "",
    "not json",
    "{",
    "[]",
    '"string"',
    "1",
    "null",
    '{"item_id": 1}',
    '{"quantity": 1}',
    '{"item_id": 1, "quantity": 1.5}',
    '{"item_id": 1, "quantity": "2"}',
    '{"item_id": 1, "quantity": true}',
    '{"item_id": 1, "quantity": 0}',
    '{"item_id": 1, "quantity": -1}',
    '{"item_id": 1, "quantity": 1e3}',
    '{"item_id": 1, "quantity": NaN}',
    '{"item_id": 1, "quantity": 100000000000000000000}',
    '{"item_id": "1", "quantity": 1}',
    '{"item_id": 2147483648, "quantity": 1}',
    '{"item_id": null, "quantity": 1}',
    "[" * 5000 + "]" * 5000,
    '{"item_id": 1, "quantity": 1' + "1" * 5000 + "}",
    "\xff\xfe",
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_add_bodies_are_400_and_change_nothing(client, seeded, connection, body):
    before = shop_state(connection)
    response = client.post("/cart/u1/add", data=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request")
    assert shop_state(connection) == before


BAD_AMOUNTS = [
    "{}",
    '{"amount": null}',
    '{"amount": true}',
    '{"amount": -1}',
    '{"amount": "-1.00"}',
    '{"amount": 1.001}',
    '{"amount": "1.001"}',
    '{"amount": "abc"}',
    '{"amount": "1e2"}',
    '{"amount": [1]}',
    '{"amount": NaN}',
    '{"amount": Infinity}',
    '{"amount": 1e400}',
    '{"amount": 99999999999.00}',
]


@pytest.mark.parametrize("body", BAD_AMOUNTS)
def test_bad_amounts_are_400_and_change_nothing(client, connection, body):
    a = insert_item(connection, "A", "1.00", 5)
    insert_cart_line(connection, "u1", a, 1)
    before = shop_state(connection)
    assert_error(client.post("/cart/u1/pay", data=body), 400, "invalid_request")
    assert shop_state(connection) == before


@pytest.mark.parametrize(
    "path",
    ["/cart/a%20b", "/cart/" + "x" * 65, "/cart/bad$id/checkout", "/users/bad$id/orders"],
)
def test_bad_user_ids_are_400(client, path):
    assert_error(client.get(path), 400, "invalid_request")


def test_bad_user_id_on_write_changes_nothing(client, seeded, connection):
    before = shop_state(connection)
    assert_error(
        client.post("/cart/bad$id/add", json={"item_id": 1, "quantity": 1}), 400, "invalid_request"
    )
    assert shop_state(connection) == before


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/orders/0"), 404, "not_found")
    assert_error(client.get("/orders/12345"), 404, "not_found")
    response = client.put("/items")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    assert_error(client.get("/cart/u1/pay"), 405, "method_not_allowed")


def test_a_path_with_doubled_slashes_is_a_json_404_not_a_redirect(client):
    """Found by the fuzz test: werkzeug merged "//" and answered an HTML 308
    redirect (GET /cart//add -> /cart/add). An API answers JSON: no such route."""
    for path in ("/cart//add", "//items", "/items//1", "/cart/u1//pay"):
        assert_error(client.get(path), 404, "not_found")
    assert_error(client.post("/cart//add", json={"item_id": 1, "quantity": 1}), 404, "not_found")


def test_oversized_body_is_413(client):
    response = client.post("/cart/u1/add", data=json.dumps({"pad": "x" * 70_000}))
    assert_error(response, 413, "payload_too_large")


def test_order_history_pages(client, connection):
    a = insert_item(connection, "A", "1.00", 10)
    ids = []
    for _ in range(3):
        insert_cart_line(connection, "u1", a, 1)
        ids.append(client.post("/cart/u1/pay", json={"amount": "1.00"}).get_json()["order_id"])
    page = client.get("/users/u1/orders?limit=2").get_json()
    assert [o["order_id"] for o in page["orders"]] == ids[::-1][:2]
    rest = client.get(f"/users/u1/orders?limit=2&before={page['next_before']}").get_json()
    assert [o["order_id"] for o in rest["orders"]] == ids[:1]
    assert "next_before" not in rest
    assert client.get("/users/u2/orders").get_json() == {"user_id": "u2", "orders": []}
    assert_error(client.get("/users/u1/orders?limit=0"), 400, "invalid_request")
    assert_error(client.get("/users/u1/orders?limit=abc"), 400, "invalid_request")
