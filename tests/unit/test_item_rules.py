"""An item's own rules (ecommerce/domain/items.py), without a database: what a
new item, a change and a restock may be, and the refusal each one gets."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecommerce.domain import items
from ecommerce.limits import MAX_PRICE, MAX_QUANTITY

T = dt.datetime(2026, 12, 12, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def message(refused) -> str | None:
    return None if refused is None else refused.message


def test_a_new_item_is_judged_name_price_stock_rules_window_in_that_order():
    ok = items.new_item_refusal("Lamp", Decimal("9.99"), Decimal(5), {})
    assert ok is None
    assert message(items.new_item_refusal(" ", Decimal("-1"), Decimal(5), {})) == (
        "name must not be empty"
    )
    assert "price must be between 0" in message(
        items.new_item_refusal("Lamp", Decimal("1.001"), Decimal("0.5"), {})
    )
    assert "stock must be a whole number" in message(
        items.new_item_refusal("Lamp", Decimal(1), Decimal("0.5"), {"colour": "red"})
    )
    assert message(items.new_item_refusal("Lamp", Decimal(1), Decimal(1), {"colour": 1})) == (
        "unknown rules: ['colour']"
    )
    closed = {"sale_starts_at": T, "sale_ends_at": T}
    assert message(items.new_item_refusal("Lamp", Decimal(1), Decimal(1), closed)) == (
        "sale_ends_at must be after sale_starts_at"
    )


def test_a_change_is_judged_alone_then_with_the_stored_window():
    assert message(items.change_refusal({"stock": 5})) == "cannot change ['stock']"
    assert message(items.change_refusal({"name": ""})) == "name must not be empty"
    assert "price" in message(items.change_refusal({"price": MAX_PRICE + 1}))
    late_start = {"sale_starts_at": T + 2 * HOUR}
    assert items.change_refusal(late_start) is None  # the stored end is not known yet
    assert items.change_refusal(late_start, (T, T + 3 * HOUR)) is None
    assert message(items.change_refusal(late_start, (T, T + HOUR))) == (
        "sale_ends_at must be after sale_starts_at"
    )
    # clearing the stored end leaves an open window
    assert items.change_refusal({**late_start, "sale_ends_at": None}, (T, T + HOUR)) is None


def test_a_restock_adds_a_positive_whole_number_within_the_bound():
    assert items.restock_refusal(Decimal(3)) is None
    assert message(items.restock_refusal(Decimal(0))) == "quantity must be positive"
    assert "whole number" in message(items.restock_refusal(Decimal("1.5")))
    assert items.restock_refusal(Decimal(3), Decimal(MAX_QUANTITY)) is None
    assert message(items.restock_refusal(Decimal(3), Decimal(MAX_QUANTITY + 1))) == (
        f"stock would exceed {MAX_QUANTITY}"
    )


@given(
    st.decimals(min_value=-10, max_value=MAX_PRICE + 10, places=3, allow_nan=False),
)
def test_a_price_is_any_amount_of_whole_cents_within_the_bound(price):
    fits = 0 <= price <= MAX_PRICE and price * 100 == int(price * 100)
    assert (items.price_refusal(price) is None) == fits


@pytest.mark.parametrize(
    ("starts", "ends", "ok"),
    [(None, None, True), (T, None, True), (None, T, True), (T, T + HOUR, True), (T, T, False)],
)
def test_a_window_ends_after_it_starts(starts, ends, ok):
    assert (items.window_refusal(starts, ends) is None) == ok
