"""Stock that arrives: new items and restocks, always through the stock ledger."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.errors import InvalidRequest, NotFound
from ecommerce.limits import MAX_PRICE, MAX_QUANTITY
from ecommerce.money import CENT
from ecommerce.repositories import ItemRepository, ItemRow
from ecommerce.services import Shop


def _check(price: Decimal | None, stock: Decimal) -> None:
    if price is not None and not (0 <= price <= MAX_PRICE and price == price.quantize(CENT)):
        raise InvalidRequest(f"price must be between 0 and {MAX_PRICE} with at most two decimals")
    if not (stock == stock.to_integral_value() and 0 <= stock <= MAX_QUANTITY):
        raise InvalidRequest(f"stock must be a whole number from 0 to {MAX_QUANTITY}")


def add_item(shop: Shop, name: str, price: Decimal, stock: Decimal) -> ItemRow:
    if not name.strip():
        raise InvalidRequest("name must not be empty")
    _check(price, stock)
    return shop.transaction(lambda s: ItemRepository(s).add(name, price, stock), "add_item")


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


def restock(shop: Shop, item_id: int, quantity: Decimal) -> Decimal:
    """Add ``quantity`` units to an item's stock; returns the new stock."""
    _check(None, quantity)
    if quantity == 0:
        raise InvalidRequest("quantity must be positive")

    def work(session: Session) -> Decimal:
        new_stock = ItemRepository(session).restock(item_id, quantity)
        if new_stock is None:
            raise NotFound(f"item {item_id} does not exist")
        if new_stock > MAX_QUANTITY:
            raise InvalidRequest(f"stock would exceed {MAX_QUANTITY}")
        return new_stock

    new_stock = shop.transaction(work, "restock")
    shop.sold_out.clear(item_id)  # other processes see it at their next re-check
    return new_stock
