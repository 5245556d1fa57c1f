"""Reading the catalogue."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.repositories import ItemRepository, ItemRow
from ecommerce.services import Shop


def list_items(shop: Shop) -> list[ItemRow]:
    return shop.transaction(lambda session: ItemRepository(session).list(), "list_items")


def get_item(shop: Shop, item_id: int) -> ItemRow:
    def work(session: Session) -> ItemRow:
        item = ItemRepository(session).get(item_id)
        if item is None:
            raise NotFound(f"item {item_id} does not exist")
        return item

    return shop.transaction(work, "get_item")
