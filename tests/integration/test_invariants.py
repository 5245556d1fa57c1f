"""`flask check-invariants` and the stock ledger it relies on."""

from sqlalchemy import text

from tests.helpers import insert_cart_line, insert_item


def check(runner):
    result = runner.invoke(args=["check-invariants"])
    return result.exit_code, result.output


def test_a_clean_shop_passes(runner, client, connection):
    assert runner.invoke(args=["seed"]).exit_code == 0
    a = insert_item(connection, "A", "2.00", 5)
    insert_cart_line(connection, "u1", a, 2)
    assert client.post("/cart/u1/pay", json={"amount": "4.00"}).status_code == 201
    assert check(runner) == (0, "ok: all invariants hold\n")


def test_add_item_and_restock_keep_the_ledger(runner, connection):
    added = runner.invoke(args=["add-item", "Lamp", "12.50", "3"])
    assert added.exit_code == 0, added.output
    item_id = int(added.output)
    restocked = runner.invoke(args=["restock", str(item_id), "4"])
    assert restocked.exit_code == 0 and "7.00" in restocked.output
    assert check(runner)[0] == 0
    assert runner.invoke(args=["restock", "999999", "1"]).exit_code != 0
    assert runner.invoke(args=["add-item", "Bad", "1.001", "1"]).exit_code != 0
    assert runner.invoke(args=["add-item", "Bad", "1.00", "-1"]).exit_code != 0


def test_stock_changed_outside_the_ledger_is_named(runner, connection):
    a = insert_item(connection, "A", "1.00", 5)
    connection.execute(text("UPDATE items SET stock = 7 WHERE id = :a"), {"a": a})
    code, output = check(runner)
    assert code == 1
    assert f"stock_not_conserved: item_id={a}" in output
    assert "unexplained=-2.00" in output


def test_broken_orders_are_named(runner, connection):
    a = insert_item(connection, "A", "1.00", 5)
    empty_order = connection.execute(
        text("INSERT INTO orders (user_id, status, total) VALUES ('u1', 'paid', 0) RETURNING id")
    ).scalar_one()
    connection.execute(
        text("INSERT INTO payments (order_id, amount) VALUES (:o, 0)"), {"o": empty_order}
    )
    unpaid = connection.execute(
        text("INSERT INTO orders (user_id, status, total) VALUES ('u2', 'paid', 3) RETURNING id")
    ).scalar_one()
    connection.execute(
        text(
            "INSERT INTO order_lines (order_id, item_id, quantity, unit_price)"
            " VALUES (:o, :a, 2, 1)"
        ),
        {"o": unpaid, "a": a},
    )
    connection.execute(text("UPDATE items SET stock = 3 WHERE id = :a"), {"a": a})
    code, output = check(runner)
    assert code == 1
    assert f"order_without_lines: order_id={empty_order}" in output
    assert f"order_total_mismatch: order_id={unpaid}" in output
    assert f"payment_mismatch: order_id={unpaid}, status=paid, total=3.00, amount=None" in output
    assert "stock_not_conserved" not in output
