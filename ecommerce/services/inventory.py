"""The catalogue's owner: new items, their sale rules, restocks (always through the
stock ledger), and an item's sales. The admin API and the CLI call these."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.domain import items as item_rules
from ecommerce.errors import InvalidRequest, NotFound
from ecommerce.repositories import ItemAccountRow, ItemRepository, ItemRow
from ecommerce.services import Shop

#: The sale rules an item may have, and what an admin may change (domain/items.py).
RULES, CHANGEABLE = item_rules.RULES, item_rules.CHANGEABLE


def _raise(refused: InvalidRequest | None) -> None:
    if refused is not None:
        raise refused


def add_item(
    shop: Shop, name: str, price: Decimal, stock: Decimal, rules: Mapping[str, Any] | None = None
) -> ItemRow:
    """A new item with its opening stock (through the ledger) and sale rules
    (domain/items.py judges them)."""
    rules = dict(rules or {})
    _raise(item_rules.new_item_refusal(name, price, stock, rules))
    return shop.transaction(lambda s: ItemRepository(s).add(name, price, stock, rules), "add_item")


def change_item(shop: Shop, item_id: int, changes: Mapping[str, Any]) -> ItemRow:
    """Change some of an item's name, price and sale rules (None clears a rule).
    The row is locked while the new window is checked against the stored one."""
    _raise(item_rules.change_refusal(changes))

    def work(session: Session) -> ItemRow:
        items = ItemRepository(session)
        current = items.lock_one(item_id)
        if current is None:
            raise NotFound(f"item {item_id} does not exist")
        stored = (current.sale_starts_at, current.sale_ends_at)
        _raise(item_rules.change_refusal(changes, stored))
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
    for name, price, stock in items:
        _raise(item_rules.new_item_refusal(name, price, stock, {}))

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
    _raise(item_rules.restock_refusal(quantity))

    def work(session: Session) -> ItemRow:
        items = ItemRepository(session)
        new_stock = items.restock(item_id, quantity)
        if new_stock is None:
            raise NotFound(f"item {item_id} does not exist")
        _raise(item_rules.restock_refusal(quantity, new_stock))
        item = items.get(item_id)
        assert item is not None
        return item

    item = shop.transaction(work, "restock")
    shop.sold_out.clear(item_id)  # other processes see it at their next re-check
    return item
