"""Reading the catalogue."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ecommerce.errors import NotFound
from ecommerce.repositories import ItemRepository
from ecommerce.services import Shop
from ecommerce.services.views import item_json


def list_items(shop: Shop) -> list[dict[str, Any]]:
    def work(session: Session) -> list[dict[str, Any]]:
        return [item_json(item) for item in ItemRepository(session).list()]

    return shop.transaction(work, "list_items")


def get_item(shop: Shop, item_id: int) -> dict[str, Any]:
    def work(session: Session) -> dict[str, Any]:
        item = ItemRepository(session).get(item_id)
        if item is None:
            raise NotFound(f"item {item_id} does not exist")
        return item_json(item)

    return shop.transaction(work, "get_item")
