"""Stock that arrives: new items and restocks, always through the stock ledger."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.errors import InvalidRequest, NotFound
from ecommerce.models import Item
from ecommerce.money import format_money
from ecommerce.repositories import ItemRepository
from ecommerce.services import Shop
from ecommerce.validation import MAX_QUANTITY

MAX_PRICE = Decimal("99999999.99")  # items.price is NUMERIC(10, 2)


def _check(price: Decimal | None, stock: Decimal) -> None:
    if price is not None and not (
        0 <= price <= MAX_PRICE and price == price.quantize(Decimal("0.01"))
    ):
        raise InvalidRequest(f"price must be between 0 and {MAX_PRICE} with at most two decimals")
    if not (stock == stock.to_integral_value() and 0 <= stock <= MAX_QUANTITY):
        raise InvalidRequest(f"stock must be a whole number from 0 to {MAX_QUANTITY}")


def add_item(shop: Shop, name: str, price: Decimal, stock: Decimal) -> Item:
    if not name.strip():
        raise InvalidRequest("name must not be empty")
    _check(price, stock)
    return shop.transaction(lambda s: ItemRepository(s).add(name, price, stock), "add_item")


def restock(shop: Shop, item_id: int, quantity: Decimal) -> str:
    _check(None, quantity)
    if quantity == 0:
        raise InvalidRequest("quantity must be positive")

    def work(session: Session) -> str:
        new_stock = ItemRepository(session).restock(item_id, quantity)
        if new_stock is None:
            raise NotFound(f"item {item_id} does not exist")
        if new_stock > MAX_QUANTITY:
            raise InvalidRequest(f"stock would exceed {MAX_QUANTITY}")
        return format_money(new_stock)

    return shop.transaction(work, "restock")
