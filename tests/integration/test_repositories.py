import datetime as dt
from decimal import Decimal

from sqlalchemy import text

from ecommerce.repositories import (
    AddedLine,
    CartRepository,
    ItemRepository,
    NewOrder,
    NewOrderLine,
    OrderRepository,
)
from tests.helpers import insert_cart_line, insert_item


def test_lock_returns_rows_in_ascending_id_order(connection, session):
    ids = [insert_item(connection, f"item-{n}", "1.00", 5) for n in range(4)]
    locked = ItemRepository(session).lock(reversed(ids))
    assert [item.id for item in locked] == sorted(ids)


def test_cart_add_accumulates_on_one_line(connection, session):
    a = insert_item(connection, "a", "1.25", 10)
    carts = CartRepository(session)
    assert carts.add({("u1", a): 2})[("u1", a)].quantity == 2
    assert carts.add({("u1", a): 3}) == {("u1", a): AddedLine(5, "a", Decimal("10.00"))}
    assert carts.add({("u1", 999_999): 1}) == {}  # no such item: nothing written
    assert [
        (line.item_id, line.quantity, line.name, line.price)
        for line in carts.lock_for_pay(["u1"])["u1"]
    ] == [(a, 5, "a", Decimal("1.25"))]


def test_write_paid_writes_orders_takes_stock_and_deletes_only_the_paid_lines(connection, session):
    a = insert_item(connection, "a", "1.00", 10)
    b = insert_item(connection, "b", "2.00", 10)
    insert_cart_line(connection, "u1", a, 1)
    insert_cart_line(connection, "u1", b, 1)
    insert_cart_line(connection, "u2", a, 1)
    with session.begin():
        orders = OrderRepository(session)
        (order_id,) = orders.next_ids(1)
        ItemRepository(session).lock([a])
        orders.write_paid(
            [NewOrder(order_id, "u1", Decimal("3.00"), [NewOrderLine(a, 3, Decimal("1.00"))])],
            [],
            0,
            {a: 3},
            dt.datetime.now(dt.UTC),
        )
    lines = connection.execute(
        text("SELECT item_id, quantity, unit_price FROM order_lines WHERE order_id = :o"),
        {"o": order_id},
    ).all()
    assert lines == [(a, 3, Decimal("1.00"))]
    assert connection.execute(
        text("SELECT amount FROM payments WHERE order_id = :o"), {"o": order_id}
    ).scalar() == Decimal("3.00")
    carts = connection.execute(text("SELECT user_id, item_id FROM carts ORDER BY 1, 2")).all()
    assert carts == [("u1", b), ("u2", a)]
    stock = connection.execute(text("SELECT stock FROM items WHERE id = :a"), {"a": a}).scalar()
    assert stock == Decimal("7.00")
