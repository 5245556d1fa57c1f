"""Sale windows and per-buyer limits, through the HTTP API on real PostgreSQL."""

from sqlalchemy import text

from tests.helpers import insert_cart_line, insert_item, set_sale_rules, shop_state


def error(response):
    return response.get_json()["error"]


def test_before_the_window_a_buyer_may_fill_the_cart_but_not_pay(client, connection):
    item = insert_item(connection, "Phone", "9.99", 5)
    set_sale_rules(connection, item, starts_in_s=3600)
    assert client.post("/cart/amy/add", json={"item_id": item, "quantity": 1}).status_code == 200
    quote = client.get("/cart/amy/checkout").get_json()
    assert quote["lines"][0]["on_sale"] is False and quote["can_pay"] is False

    refused = client.post("/cart/amy/pay", json={"amount": "9.99"})
    assert refused.status_code == 409
    assert error(refused)["code"] == "sale_not_started"
    assert error(refused)["details"]["item_id"] == item
    assert error(refused)["details"]["starts_at"]
    assert shop_state(connection).orders == 0
    listed = client.get(f"/items/{item}").get_json()
    assert listed["sale_starts_at"] == error(refused)["details"]["starts_at"]
    assert listed["sale_ends_at"] is None and listed["per_user_limit"] is None


def test_after_the_window_the_pay_is_refused(client, connection):
    item = insert_item(connection, "Phone", "9.99", 5)
    set_sale_rules(connection, item, starts_in_s=-7200, ends_in_s=-60)
    insert_cart_line(connection, "bob", item, 1)
    refused = client.post("/cart/bob/pay", json={"amount": "9.99"})
    assert refused.status_code == 409 and error(refused)["code"] == "sale_ended"
    assert client.get("/cart/bob/checkout").get_json()["lines"][0]["on_sale"] is False


def test_inside_the_window_the_pay_goes_through(client, connection):
    item = insert_item(connection, "Phone", "9.99", 5)
    set_sale_rules(connection, item, starts_in_s=-60, ends_in_s=3600)
    insert_cart_line(connection, "cat", item, 1)
    assert client.get("/cart/cat/checkout").get_json()["lines"][0]["on_sale"] is True
    assert client.post("/cart/cat/pay", json={"amount": "9.99"}).status_code == 201


def test_the_limit_counts_the_buyers_orders_at_add_and_at_pay(client, connection):
    item = insert_item(connection, "Phone", "1.00", 50)
    set_sale_rules(connection, item, per_user_limit=3)
    assert client.post("/cart/dan/add", json={"item_id": item, "quantity": 2}).status_code == 200
    assert client.post("/cart/dan/pay", json={"amount": "2.00"}).status_code == 201

    early = client.post("/cart/dan/add", json={"item_id": item, "quantity": 2})
    assert early.status_code == 409 and error(early)["code"] == "limit_exceeded"
    assert error(early)["details"] == {"item_id": item, "limit": 3, "already": 2}
    assert client.get("/cart/dan").get_json()["lines"] == []  # the refused add changed nothing

    # A cart filled behind the early check's back is refused at pay, authoritatively.
    insert_cart_line(connection, "dan", item, 2)
    late = client.post("/cart/dan/pay", json={"amount": "2.00"})
    assert late.status_code == 409 and error(late)["code"] == "limit_exceeded"
    assert error(late)["details"] == {"item_id": item, "limit": 3, "already": 2}
    connection.execute(text("UPDATE carts SET quantity = 1 WHERE user_id = 'dan'"))
    assert client.post("/cart/dan/pay", json={"amount": "1.00"}).status_code == 201
    assert shop_state(connection).stock[item] == 47


def test_the_window_is_told_before_the_limit_and_the_limit_before_the_stock(client, connection):
    item = insert_item(connection, "Phone", "1.00", 1)
    set_sale_rules(connection, item, per_user_limit=1, starts_in_s=3600)
    insert_cart_line(connection, "eve", item, 2)
    assert error(client.post("/cart/eve/pay", json={"amount": "2.00"}))["code"] == (
        "sale_not_started"
    )
    set_sale_rules(connection, item, per_user_limit=1)
    assert error(client.post("/cart/eve/pay", json={"amount": "2.00"}))["code"] == (
        "limit_exceeded"
    )
