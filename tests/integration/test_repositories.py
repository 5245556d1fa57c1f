from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.repositories import CartRepository, ItemRepository
from tests.helpers import insert_cart_line, insert_item


def test_lock_returns_rows_in_ascending_id_order(connection):
    ids = [insert_item(connection, f"item-{n}", "1.00", 5) for n in range(4)]
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        locked = ItemRepository(session).lock(reversed(ids))
    assert [item.id for item in locked] == sorted(ids)


def test_decrement_subtracts_each_quantity(connection):
    a = insert_item(connection, "a", "1.00", 5)
    b = insert_item(connection, "b", "2.00", 7)
    with (
        Session(bind=connection, join_transaction_mode="create_savepoint") as session,
        session.begin(),
    ):
        ItemRepository(session).decrement({a: 2, b: 7})
    stock = dict(
        connection.execute(
            text("SELECT id, stock FROM items WHERE id IN (:a, :b)"), {"a": a, "b": b}
        ).all()
    )
    assert stock == {a: Decimal("3.00"), b: Decimal("0.00")}


def test_take_if_available_refuses_without_writing(connection):
    a = insert_item(connection, "a", "1.00", 2)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        items = ItemRepository(session)
        assert items.take_if_available(a, 3) is None
        taken = items.take_if_available(a, 2)
    assert taken is not None and taken.stock == Decimal("0.00")


def test_cart_add_accumulates_on_one_line(connection):
    a = insert_item(connection, "a", "1.00", 10)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        carts = CartRepository(session)
        assert carts.add("u1", a, 2) == 2
        assert carts.add("u1", a, 3) == 5
        assert carts.lock_lines("u1") == {a: 5}


def test_remove_lines_leaves_other_lines(connection):
    a = insert_item(connection, "a", "1.00", 10)
    b = insert_item(connection, "b", "1.00", 10)
    insert_cart_line(connection, "u1", a, 1)
    insert_cart_line(connection, "u1", b, 1)
    insert_cart_line(connection, "u2", a, 1)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        CartRepository(session).remove_lines("u1", [a])
        assert CartRepository(session).lock_lines("u1") == {b: 1}
        assert CartRepository(session).lock_lines("u2") == {a: 1}
