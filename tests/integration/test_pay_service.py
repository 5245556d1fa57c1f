"""The pay use case against real PostgreSQL.
Each test runs inside a transaction that is rolled back afterwards."""

from decimal import Decimal

import pytest
from sqlalchemy import text

from ecommerce.errors import AmountMismatch, EmptyCart, InsufficientStock
from ecommerce.services import cart, payment
from tests.helpers import insert_cart_line, insert_item, shop_state


def test_pay_decrements_stock_and_writes_order(shop, connection):
    apple = insert_item(connection, "Apple", "0.50", 10)
    pear = insert_item(connection, "Pear", "1.25", 3)
    insert_cart_line(connection, "u1", apple, 2)
    insert_cart_line(connection, "u1", pear, 3)

    order = payment.pay(shop, "u1", Decimal("4.75"))

    assert order.status == "paid"
    assert order.total == Decimal("4.75")
    assert [(line.item_id, line.quantity) for line in order.lines] == [(apple, 2), (pear, 3)]
    after = shop_state(connection)
    assert after.stock[apple] == Decimal("8.00") and after.stock[pear] == Decimal("0.00")
    assert (after.orders, after.order_lines, after.payments, after.carts) == (1, 2, 1, {})
    amount = connection.execute(
        text("SELECT amount FROM payments WHERE order_id = :o"), {"o": order.order_id}
    ).scalar_one()
    assert amount == Decimal("4.75")


def test_empty_cart_is_refused(shop):
    with pytest.raises(EmptyCart):
        payment.pay(shop, "nobody", Decimal("0"))


def test_insufficient_stock_names_every_short_item_and_changes_nothing(shop, connection):
    a = insert_item(connection, "A", "1.00", 1)
    b = insert_item(connection, "B", "1.00", 5)
    c = insert_item(connection, "C", "1.00", 0)
    for item_id, q in ((a, 2), (b, 1), (c, 1)):
        insert_cart_line(connection, "u1", item_id, q)
    before = shop_state(connection)

    with pytest.raises(InsufficientStock) as refused:
        payment.pay(shop, "u1", Decimal("4.00"))

    short = refused.value.details["items"]
    assert [s["item_id"] for s in short] == [a, c]
    assert short[0] == {"item_id": a, "name": "A", "requested": 2, "available": "1.00"}
    assert shop_state(connection) == before


def test_amount_must_equal_total_exactly(shop, connection):
    a = insert_item(connection, "A", "0.10", 10)
    insert_cart_line(connection, "u1", a, 3)
    before = shop_state(connection)

    for wrong in (Decimal("0.29"), Decimal("0.31"), Decimal("0")):
        with pytest.raises(AmountMismatch) as refused:
            payment.pay(shop, "u1", wrong)
        assert refused.value.details["expected"] == "0.30"
    assert shop_state(connection) == before

    assert payment.pay(shop, "u1", Decimal("0.30")).total == Decimal("0.30")


def test_paid_cart_is_empty_and_second_pay_is_refused(shop, connection):
    a = insert_item(connection, "A", "1.00", 10)
    insert_cart_line(connection, "u1", a, 1)
    payment.pay(shop, "u1", Decimal("1.00"))
    with pytest.raises(EmptyCart):
        payment.pay(shop, "u1", Decimal("1.00"))


def test_add_to_cart_refuses_more_than_stock(shop, connection):
    a = insert_item(connection, "A", "1.00", 3)
    cart.add_to_cart(shop, "u1", a, 2)
    with pytest.raises(InsufficientStock):
        cart.add_to_cart(shop, "u1", a, 2)  # line would be 4 > 3
    assert cart.view_cart(shop, "u1").lines[0].quantity == 2


def test_sale_windows_are_judged_at_the_shops_clock(shop, connection):
    """No test waits for a window to open or close: the shop's clock is set."""
    import datetime as dt

    from ecommerce.errors import SaleEnded, SaleNotStarted
    from tests.helpers import set_sale_rules

    a = insert_item(connection, "A", "1.00", 5)
    set_sale_rules(connection, a, starts_in_s=3600, ends_in_s=7200)
    insert_cart_line(connection, "u1", a, 1)
    now = dt.datetime.now(dt.UTC)

    with pytest.raises(SaleNotStarted):
        payment.pay(shop, "u1", Decimal("1.00"))
    shop.clock = lambda: now + dt.timedelta(hours=3)
    assert cart.view_cart(shop, "u1").off_sale == {a}
    with pytest.raises(SaleEnded):
        payment.pay(shop, "u1", Decimal("1.00"))
    shop.clock = lambda: now + dt.timedelta(hours=1, minutes=30)
    assert cart.view_cart(shop, "u1").off_sale == frozenset()
    assert payment.pay(shop, "u1", Decimal("1.00")).total == Decimal("1.00")
