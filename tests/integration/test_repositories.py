from decimal import Decimal

from sqlalchemy import text

from ecommerce.repositories import (
    AddedLine,
    CartRepository,
    ItemRepository,
    NewOrderLine,
    OrderRepository,
)
from tests.helpers import insert_cart_line, insert_item


def test_lock_returns_rows_in_ascending_id_order(connection, session):
    ids = [insert_item(connection, f"item-{n}", "1.00", 5) for n in range(4)]
    locked = ItemRepository(session).lock(reversed(ids))
    assert [item.id for item in locked] == sorted(ids)


def test_decrement_subtracts_each_quantity(connection, session):
    a = insert_item(connection, "a", "1.00", 5)
    b = insert_item(connection, "b", "2.00", 7)
    with session.begin():
        ItemRepository(session).decrement({a: 2, b: 7})
    stock = dict(
        connection.execute(
            text("SELECT id, stock FROM items WHERE id IN (:a, :b)"), {"a": a, "b": b}
        ).all()
    )
    assert stock == {a: Decimal("3.00"), b: Decimal("0.00")}


def test_take_if_available_refuses_without_writing(connection, session):
    a = insert_item(connection, "a", "1.00", 2)
    with session.begin():
        items = ItemRepository(session)
        assert items.take_if_available(a, 3, Decimal("1.00")) is None
        assert items.take_if_available(a, 1, Decimal("0.99")) is None  # price changed
        taken = items.take_if_available(a, 2, Decimal("1.00"))
        assert taken is not None and taken.stock == 2  # the row as locked, before the take
    assert connection.execute(text("SELECT stock FROM items WHERE id = :a"), {"a": a}).scalar() == 0


def test_cart_add_accumulates_on_one_line(connection, session):
    a = insert_item(connection, "a", "1.25", 10)
    carts = CartRepository(session)
    assert carts.add("u1", a, 2).quantity == 2
    assert carts.add("u1", a, 3) == AddedLine(5, "a", Decimal("10.00"))
    assert [
        (line.item_id, line.quantity, line.name, line.price) for line in carts.lock_for_pay("u1")
    ] == [(a, 5, "a", Decimal("1.25"))]


def test_write_paid_deletes_only_the_paid_lines(connection, session):
    a = insert_item(connection, "a", "1.00", 10)
    b = insert_item(connection, "b", "2.00", 10)
    insert_cart_line(connection, "u1", a, 1)
    insert_cart_line(connection, "u1", b, 1)
    insert_cart_line(connection, "u2", a, 1)
    with session.begin():
        order_id, _ = OrderRepository(session).write_paid(
            "u1", Decimal("3.00"), Decimal("3.00"), [NewOrderLine(a, 3, Decimal("1.00"))]
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
