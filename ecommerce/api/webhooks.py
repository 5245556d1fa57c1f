"""The payment provider's webhook: a signed event settles a pending order."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Response, current_app, request

from ecommerce import gateway
from ecommerce.api import current_shop, json_response, schemas, validation
from ecommerce.api.openapi import Operation, documented
from ecommerce.errors import InvalidRequest, NotFound, Unauthorized
from ecommerce.services import settlement

bp = Blueprint("webhooks", __name__, url_prefix="/payments")

SIGNATURE_HEADER = "X-Signature"


def _verify_signature() -> None:
    """HMAC-SHA256 over the raw body with PAYMENT_WEBHOOK_SECRET, sent as
    ``X-Signature: sha256=<hex>``; compared in constant time."""
    secret = current_app.extensions["settings"].payment_webhook_secret
    sent = request.headers.get(SIGNATURE_HEADER, "")
    if not secret or not sent.startswith("sha256="):
        raise Unauthorized("the webhook needs a valid X-Signature")
    expected = hmac.new(secret.encode(), request.get_data(cache=True), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sent.removeprefix("sha256=")):
        raise Unauthorized("the webhook signature does not match")


@bp.post("/webhook")
@documented(
    Operation(
        "The payment provider reports a charge's outcome (signed: X-Signature: sha256=<HMAC>). "
        "A repeated event changes nothing.",
        {200: schemas.PendingOrder},
        errors=(400, 401, 404, 413),
        body=schemas.WebhookEvent,
    )
)
def webhook() -> Response:
    _verify_signature()
    event = validation.body(schemas.WebhookEvent, validation.json_object(request))
    order_id = gateway.order_of(event.reference)
    if order_id is None:
        raise InvalidRequest("reference must be order-<id>")
    if current_shop().gateway is None:
        raise NotFound("this shop has no payment provider")
    order = settlement.confirm_payment(current_shop(), order_id, event.status)
    return json_response({"order_id": order.order_id, "status": order.status})
