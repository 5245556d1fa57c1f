"""HTTP endpoints: one blueprint per resource. Endpoints only parse input,
call one use case and shape the JSON answer; errors are mapped to JSON by
ecommerce.errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request
from sqlalchemy.orm import Session

from ecommerce.services import Shop, idempotency


def current_shop() -> Shop:
    return current_app.extensions["shop"]


def json_body(payload: Any) -> bytes:
    return (current_app.json.dumps(payload, separators=(",", ":")) + "\n").encode()


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json_body(payload), status, mimetype="application/json")


def effect_response(
    name: str,
    user_id: str,
    body: Any,
    status: int,
    work: Callable[[Session], Any],
) -> Response:
    """Run a use case that changes state, honouring an Idempotency-Key header.

    ``work`` runs inside the transaction and returns the JSON payload. With a
    key, the rendered response is stored in that same transaction and replayed
    byte for byte on a repeat.
    """
    shop = current_shop()
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key is None:
        return json_response(shop.transaction(work, name), status)

    request_fingerprint = idempotency.fingerprint(request.method, request.path, body)

    def keyed(session: Session) -> idempotency.StoredResponse:
        return idempotency.once(
            session,
            user_id=user_id,
            key=key,
            request_fingerprint=request_fingerprint,
            ttl_s=shop.idempotency_ttl_s,
            effect=lambda: (status, json_body(work(session))),
        )

    stored = shop.transaction(keyed, name)
    response = Response(stored.body, stored.status, mimetype="application/json")
    if stored.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def register_blueprints(app: Flask) -> None:
    from ecommerce.api.cart import bp as cart_bp
    from ecommerce.api.items import bp as items_bp
    from ecommerce.api.orders import bp as orders_bp

    app.register_blueprint(items_bp)
    app.register_blueprint(cart_bp)
    app.register_blueprint(orders_bp)
