"""Errors as JSON: ``{"error": {"code": "...", "message": "...", "details": ...}}``.

Domain code raises an ecommerce.errors exception (a code, no HTTP); this module
maps each code to its status and headers. Every HTTP error Flask raises itself
gets the same shape, so no HTML error page ever leaks out and no unexpected
exception becomes a bare 500 page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from ecommerce import errors

log = logging.getLogger(__name__)

STATUS: dict[type[errors.ShopError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.EmptyCart: 409,
    errors.InsufficientStock: 409,
    errors.Conflict: 409,
    errors.SaleNotStarted: 409,
    errors.SaleEnded: 409,
    errors.LimitExceeded: 409,
    errors.QueueRequired: 409,
    errors.IdempotencyKeyInUse: 409,
    errors.PaymentDeclined: 402,
    errors.AmountMismatch: 422,
    errors.OrderTooLarge: 422,
    errors.IdempotencyKeyReused: 422,
    errors.ServiceBusy: 503,
    errors.NotReady: 503,
}

_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_of(error: errors.ShopError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def headers_of(error: errors.ShopError) -> dict[str, str]:
    if isinstance(error, errors.ServiceBusy):
        return {"Retry-After": str(error.retry_after_s)}
    if isinstance(error, errors.NotReady):
        return {"Retry-After": "1"}
    if isinstance(error, errors.Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="ecommerce"'}
    return {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    g.error_code = code  # for the request log
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(errors.ShopError)
    def _shop_error(exc: errors.ShopError) -> Response:
        return error_response(status_of(exc), exc.code, exc.message, exc.details, headers_of(exc))

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
