from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ecommerce.api import current_shop
from ecommerce.services import catalog

bp = Blueprint("items", __name__)


@bp.get("/items")
def list_items() -> Response:
    return jsonify(catalog.list_items(current_shop()))


@bp.get("/items/<int(min=1, max=2147483647):item_id>")
def get_item(item_id: int) -> Response:
    return jsonify(catalog.get_item(current_shop(), item_id))
