"""The catalogue's owner: new items, their sale rules, restocks (always through the
stock ledger), and an item's sales. The admin API and the CLI call these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.errors import InvalidRequest, NotFound
from ecommerce.limits import MAX_PRICE, MAX_QUANTITY
from ecommerce.money import CENT
from ecommerce.repositories import ItemAccountRow, ItemRepository, ItemRow
from ecommerce.services import Shop


def _check(price: Decimal | None, stock: Decimal) -> None:
    if price is not None and not (0 <= price <= MAX_PRICE and price == price.quantize(CENT)):
        raise InvalidRequest(f"price must be between 0 and {MAX_PRICE} with at most two decimals")
    if not (stock == stock.to_integral_value() and 0 <= stock <= MAX_QUANTITY):
        raise InvalidRequest(f"stock must be a whole number from 0 to {MAX_QUANTITY}")


#: The sale rules an item may have (None: no rule).
RULES = ("per_user_limit", "sale_starts_at", "sale_ends_at")
#: What an admin may change on an item.
CHANGEABLE = ("name", "price", *RULES)


def _check_window(starts: dt.datetime | None, ends: dt.datetime | None) -> None:
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidRequest("sale_ends_at must be after sale_starts_at")


def add_item(
    shop: Shop, name: str, price: Decimal, stock: Decimal, rules: Mapping[str, Any] | None = None
) -> ItemRow:
    """A new item with its opening stock (through the ledger) and sale rules."""
    if not name.strip():
        raise InvalidRequest("name must not be empty")
    _check(price, stock)
    rules = dict(rules or {})
    if set(rules) - set(RULES):
        raise InvalidRequest(f"unknown rules: {sorted(set(rules) - set(RULES))}")
    _check_window(rules.get("sale_starts_at"), rules.get("sale_ends_at"))
    return shop.transaction(lambda s: ItemRepository(s).add(name, price, stock, rules), "add_item")


def change_item(shop: Shop, item_id: int, changes: Mapping[str, Any]) -> ItemRow:
    """Change some of an item's name, price and sale rules (None clears a rule).
    The row is locked while the new window is checked against the stored one."""
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise InvalidRequest(f"cannot change {sorted(unknown)}")
    if "name" in changes and not str(changes["name"]).strip():
        raise InvalidRequest("name must not be empty")
    if "price" in changes:
        _check(changes["price"], Decimal(0))

    def work(session: Session) -> ItemRow:
        items = ItemRepository(session)
        current = items.lock_one(item_id)
        if current is None:
            raise NotFound(f"item {item_id} does not exist")
        _check_window(
            changes.get("sale_starts_at", current.sale_starts_at),
            changes.get("sale_ends_at", current.sale_ends_at),
        )
        return items.change(item_id, changes) if changes else current

    return shop.transaction(work, "change_item")


def item_sales(shop: Shop, item_id: int) -> ItemAccountRow:
    """Stock and sales of one item, from the database (one statement, one snapshot)."""

    def work(session: Session) -> ItemAccountRow:
        sales = ItemRepository(session).account(item_id, shop.clock())
        if sales is None:
            raise NotFound(f"item {item_id} does not exist")
        return sales

    return shop.transaction(work, "item_sales")


def add_missing_items(shop: Shop, items: list[tuple[str, Decimal, Decimal]]) -> list[str]:
    """Add each (name, price, stock) whose name is not in the catalogue yet; returns
    the names added. One transaction: run twice, it adds nothing the second time."""
    for _, price, stock in items:
        _check(price, stock)

    def work(session: Session) -> list[str]:
        repository = ItemRepository(session)
        added = []
        for name, price, stock in items:
            if repository.find_by_name(name) is None:
                repository.add(name, price, stock)
                added.append(name)
        return added

    return shop.transaction(work, "add_missing_items")


def restock(shop: Shop, item_id: int, quantity: Decimal) -> ItemRow:
    """Add ``quantity`` units to an item's stock; returns the item."""
    _check(None, quantity)
    if quantity == 0:
        raise InvalidRequest("quantity must be positive")

    def work(session: Session) -> ItemRow:
        items = ItemRepository(session)
        new_stock = items.restock(item_id, quantity)
        if new_stock is None:
            raise NotFound(f"item {item_id} does not exist")
        if new_stock > MAX_QUANTITY:
            raise InvalidRequest(f"stock would exceed {MAX_QUANTITY}")
        item = items.get(item_id)
        assert item is not None
        return item

    item = shop.transaction(work, "restock")
    shop.sold_out.clear(item_id)  # other processes see it at their next re-check
    return item
