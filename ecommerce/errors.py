"""Errors as JSON: ``{"error": {"code": "...", "message": "...", "details": ...}}``.

Domain code raises a ShopError subclass; the handlers registered here turn it,
and every HTTP error Flask raises itself, into that shape, so no HTML error
page ever leaks out and no unexpected exception becomes a bare 500 page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ShopError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidRequest(ShopError):
    status = 400
    code = "invalid_request"


class NotFound(ShopError):
    status = 404
    code = "not_found"


class EmptyCart(ShopError):
    status = 409
    code = "empty_cart"


class InsufficientStock(ShopError):
    status = 409
    code = "insufficient_stock"


class Conflict(ShopError):
    status = 409
    code = "conflict"


class AmountMismatch(ShopError):
    status = 422
    code = "amount_mismatch"


class OrderTooLarge(ShopError):
    status = 422
    code = "order_too_large"


class ServiceBusy(ShopError):
    """The database could not give us a lock, a connection or an answer in time."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Unauthorized(ShopError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="ecommerce"'})


class Forbidden(ShopError):
    status = 403
    code = "forbidden"


class IdempotencyKeyInUse(ShopError):
    status = 409
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(ShopError):
    status = 422
    code = "idempotency_key_reused"


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ShopError)
    def _shop_error(exc: ShopError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return error_response(status, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
