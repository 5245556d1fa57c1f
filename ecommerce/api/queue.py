"""A hot item's waiting room, the buyer's side: join the line, poll the place,
leave it. User-scoped like the cart: with authentication on, the token's user.

Join and poll answer at once (no lock is waited for); a waiting place's poll
reads no database at all (ecommerce/services/rooms/).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ecommerce.api import auth, current_shop, json_response, schemas, validation
from ecommerce.api.openapi import Operation, documented
from ecommerce.api.render import place_json
from ecommerce.limits import PLACE_TOKEN_HEADER
from ecommerce.services import rooms

bp = Blueprint("queue", __name__, url_prefix="/items/<id:item_id>/queue/<user_id>")


@bp.url_value_preprocessor
def _authorize(endpoint: str | None, values: dict | None) -> None:
    auth.current_subject()
    if values is not None and "user_id" in values:
        auth.require_user(validation.user_id(values["user_id"]))


def _place_response(place: rooms.PlaceView) -> Response:
    response = json_response(place_json(place))
    if place.keeps_polling:
        response.headers["Retry-After"] = str(-(-place.poll_after_ms // 1000))
    return response


@bp.post("")
@documented(
    Operation(
        "Join the item's waiting room (again: the same place). Answers at once: the rank, "
        "places ahead, the estimated wait, when to poll, a place token; the admission token "
        "once it is the buyer's turn.",
        {200: schemas.Place},
        errors=(404,),
        user_scoped=True,
        retry_after=True,
    )
)
def join(item_id: int, user_id: str) -> Response:
    return _place_response(rooms.join(current_shop(), item_id, user_id))


@bp.get("")
@documented(
    Operation(
        f"Where the place stands (send its place token as {PLACE_TOKEN_HEADER}); admitted: "
        "the admission token for add and pay.",
        {200: schemas.Place},
        errors=(404,),
        user_scoped=True,
        headers=(PLACE_TOKEN_HEADER,),
        retry_after=True,
    )
)
def poll(item_id: int, user_id: str) -> Response:
    token = validation.place_token(request)
    return _place_response(rooms.poll(current_shop(), item_id, user_id, token))


@bp.delete("")
@documented(
    Operation(
        "Leave the line (an admission held is given back).",
        {200: schemas.LeftPlace},
        errors=(404,),
        user_scoped=True,
    )
)
def leave(item_id: int, user_id: str) -> Response:
    rooms.leave(current_shop(), item_id, user_id)
    return json_response({"item_id": item_id, "user_id": user_id, "status": "left"})
