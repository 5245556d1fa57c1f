"""An item's own rules, as pure checks: what a new item, a change and a restock
may be. Each returns the refusal (an InvalidRequest, a 400) or None; the
inventory service asks before it writes, and asks again with the locked row
where the answer depends on what is stored (a window's other end, the stock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ecommerce.errors import InvalidRequest
from ecommerce.limits import MAX_PRICE, MAX_QUANTITY
from ecommerce.money import CENT

#: The sale rules an item may have (None: no rule).
RULES = ("per_user_limit", "sale_starts_at", "sale_ends_at")
#: What an admin may change on an item.
CHANGEABLE = ("name", "price", *RULES)


def price_refusal(price: Decimal) -> InvalidRequest | None:
    if not (0 <= price <= MAX_PRICE and price == price.quantize(CENT)):
        return InvalidRequest(f"price must be between 0 and {MAX_PRICE} with at most two decimals")
    return None


def units_refusal(units: Decimal, what: str = "stock") -> InvalidRequest | None:
    """Units of stock: a whole number within the shop's bound."""
    if not (units == units.to_integral_value() and 0 <= units <= MAX_QUANTITY):
        return InvalidRequest(f"{what} must be a whole number from 0 to {MAX_QUANTITY}")
    return None


def window_refusal(starts: dt.datetime | None, ends: dt.datetime | None) -> InvalidRequest | None:
    if starts is not None and ends is not None and ends <= starts:
        return InvalidRequest("sale_ends_at must be after sale_starts_at")
    return None


def new_item_refusal(
    name: str, price: Decimal, stock: Decimal, rules: Mapping[str, Any]
) -> InvalidRequest | None:
    """Why a new item may not be added as given (None: it may)."""
    if not name.strip():
        return InvalidRequest("name must not be empty")
    unknown = sorted(set(rules) - set(RULES))
    return (
        price_refusal(price)
        or units_refusal(stock)
        or (InvalidRequest(f"unknown rules: {unknown}") if unknown else None)
        or window_refusal(rules.get("sale_starts_at"), rules.get("sale_ends_at"))
    )


def change_refusal(
    changes: Mapping[str, Any],
    stored_window: tuple[dt.datetime | None, dt.datetime | None] | None = None,
) -> InvalidRequest | None:
    """Why ``changes`` may not be made (None: they may). Without
    ``stored_window`` (before the row is read) the changes alone are judged; with
    it (the locked row's start and end), the window they leave too."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        return InvalidRequest(f"cannot change {unknown}")
    if "name" in changes and not str(changes["name"]).strip():
        return InvalidRequest("name must not be empty")
    if "price" in changes and (refused := price_refusal(changes["price"])):
        return refused
    if stored_window is None:
        return None
    starts, ends = stored_window
    return window_refusal(changes.get("sale_starts_at", starts), changes.get("sale_ends_at", ends))


def restock_refusal(quantity: Decimal, new_stock: Decimal | None = None) -> InvalidRequest | None:
    """Why ``quantity`` units may not be added (None: they may); with
    ``new_stock`` (after the locked row's update), why the stock may not
    become that."""
    refused = units_refusal(quantity)
    if refused is None and quantity == 0:
        refused = InvalidRequest("quantity must be positive")
    if refused is None and new_stock is not None and new_stock > MAX_QUANTITY:
        refused = InvalidRequest(f"stock would exceed {MAX_QUANTITY}")
    return refused
