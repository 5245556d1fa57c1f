from __future__ import annotations

from flask import Blueprint, Response

from ecommerce.api import current_shop, json_response, schemas
from ecommerce.api.openapi import Operation, documented
from ecommerce.api.render import item_json
from ecommerce.services import catalog

bp = Blueprint("items", __name__)


@bp.get("/items")
@documented(Operation("The catalogue: every item with its price and stock.", {200: schemas.Items}))
def list_items() -> Response:
    return json_response([item_json(item) for item in catalog.list_items(current_shop())])


@bp.get("/items/<id:item_id>")
@documented(Operation("One item.", {200: schemas.Item}, errors=(404,)))
def get_item(item_id: int) -> Response:
    return json_response(item_json(catalog.get_item(current_shop(), item_id)))
