"""Ending an order: the buyer's cancel, the admin's refund; the stock comes back
through the ledger and the books still balance."""

import pytest
from sqlalchemy import text

from tests.helpers import bearer, insert_cart_line, insert_item, sessions_bound_to, shop_state


@pytest.fixture
def admin(app):
    return bearer(app, "ops", admin=True)


def paid_order(client, connection, user="amy", price="3.00", stock=5, quantity=2):
    item = insert_item(connection, "Lamp", price, stock)
    insert_cart_line(connection, user, item, quantity)
    total = f"{float(price) * quantity:.2f}"
    order = client.post(f"/cart/{user}/pay", json={"amount": total})
    assert order.status_code == 201
    return item, order.get_json()


def test_cancel_a_paid_order_refunds_it_and_puts_the_stock_back(client, runner, connection):
    item, order = paid_order(client, connection)
    assert shop_state(connection).stock[item] == 3

    cancelled = client.post(f"/orders/{order['order_id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "refunded"
    assert shop_state(connection).stock[item] == 5
    movements = connection.execute(
        text(
            "SELECT reason, quantity, order_id FROM stock_movements WHERE item_id = :i ORDER BY id"
        ),
        {"i": item},
    ).all()
    assert [(r, int(q), o) for r, q, o in movements] == [
        ("initial", 5, None),
        ("refund", 2, order["order_id"]),
    ]
    refund = connection.execute(
        text("SELECT amount FROM refunds WHERE order_id = :o"), {"o": order["order_id"]}
    ).scalar_one()
    assert str(refund) == order["total"]
    assert runner.invoke(args=["check-invariants"]).output == "ok: all invariants hold\n"

    again = client.post(f"/orders/{order['order_id']}/cancel")
    assert again.status_code == 200 and again.get_json() == cancelled.get_json()
    assert shop_state(connection).stock[item] == 5  # given back once
    assert client.get(f"/orders/{order['order_id']}").get_json()["status"] == "refunded"


def test_the_admin_refunds_any_order_and_the_sales_show_it(client, admin, connection):
    item, order = paid_order(client, connection, user="bob")
    refunded = client.post(f"/admin/orders/{order['order_id']}/refund", headers=admin)
    assert refunded.status_code == 200 and refunded.get_json()["status"] == "refunded"
    sales = client.get(f"/admin/items/{item}/sales", headers=admin).get_json()
    assert (sales["sold"], sales["refunded"], sales["revenue"], sales["orders"]) == (
        0, 2, "0.00", 0,
    )  # fmt: skip
    assert client.post("/admin/orders/999999/refund", headers=admin).status_code == 404
    assert client.post(f"/admin/orders/{order['order_id']}/refund").status_code == 401


def test_orders_that_already_gave_their_stock_back_cannot_be_ended(client, connection):
    item = insert_item(connection, "Lamp", "1.00", 5)
    for status in ("expired", "payment_failed"):
        order_id = connection.execute(
            text("INSERT INTO orders (user_id, status, total) VALUES ('cy', :s, 1) RETURNING id"),
            {"s": status},
        ).scalar_one()
        connection.execute(
            text("INSERT INTO order_lines VALUES (:o, :i, 1, 1)"), {"o": order_id, "i": item}
        )
        refused = client.post(f"/orders/{order_id}/cancel")
        assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "conflict"
        assert status in refused.get_json()["error"]["message"]


def test_someone_elses_order_cannot_be_cancelled(make_app, connection):
    app = make_app(auth_required=True)
    with sessions_bound_to(app.extensions["shop"].db, connection):
        client = app.test_client()
        item = insert_item(connection, "Lamp", "1.00", 5)
        insert_cart_line(connection, "owner", item, 1)
        owner = bearer(app, "owner")
        other = bearer(app, "other")
        order = client.post("/cart/owner/pay", json={"amount": "1.00"}, headers=owner).get_json()
        path = f"/orders/{order['order_id']}/cancel"
        assert client.post(path).status_code == 401
        assert client.post(path, headers=other).status_code == 404
        assert client.post(path, headers=owner).get_json()["status"] == "refunded"


def test_order_ids_beyond_32_bits_are_paid_read_and_listed(client, connection):
    """Order ids are 64-bit (a long storm draws thousands a second). Before the
    fix the sequence could not even be set past 2**31 - 1."""
    connection.execute(text("ALTER SEQUENCE orders_id_seq RESTART WITH 3000000000"))
    item = insert_item(connection, "Far", "1.00", 5)
    insert_cart_line(connection, "zed", item, 1)
    paid = client.post("/cart/zed/pay", json={"amount": "1.00"})
    assert paid.status_code == 201, paid.get_json()
    order_id = paid.get_json()["order_id"]
    assert order_id >= 3_000_000_000
    assert client.get(f"/orders/{order_id}").get_json()["order_id"] == order_id
    listed = client.get("/users/zed/orders").get_json()
    assert [o["order_id"] for o in listed["orders"]] == [order_id]
    assert client.get(f"/orders/{2**63}").status_code == 404  # past 64 bits: no such path
