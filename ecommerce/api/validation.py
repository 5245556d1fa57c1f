"""Request parsing: everything a client sends is checked here, before any SQL runs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Request, current_app

from ecommerce.errors import InvalidRequest
from ecommerce.limits import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    MAX_QUANTITY,
    USER_ID_PATTERN,
    USER_ID_RULE,
)
from ecommerce.money import MoneyError, parse_amount


def user_id(raw: str) -> str:
    if not USER_ID_PATTERN.match(raw):
        raise InvalidRequest(USER_ID_RULE)
    return raw


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, if sent (the draft also allows it as a quoted string)."""
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if key.startswith('"') and key.endswith('"') and len(key) >= 2:
        key = key[1:-1]
    if not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise InvalidRequest(f"{IDEMPOTENCY_HEADER} must be 1-255 visible ASCII characters")
    return key


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object. Numbers with a fraction become Decimal."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidRequest("the request body must be a JSON object")
    try:
        body = current_app.json.loads(raw)
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise InvalidRequest("the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def integer_field(body: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int:
    if name not in body:
        raise InvalidRequest(f"{name} is required")
    value = body[name]
    # A JSON integer only: not 1.5, not "2", not true (bool is an int in Python).
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be a JSON integer")
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be between {minimum} and {maximum}")
    return value


def add_to_cart(body: dict[str, Any]) -> tuple[int, int]:
    item_id = integer_field(body, "item_id", minimum=1, maximum=MAX_ID)
    quantity = integer_field(body, "quantity", minimum=1, maximum=MAX_QUANTITY)
    return item_id, quantity


def payment_amount(body: dict[str, Any]) -> Decimal:
    if "amount" not in body:
        raise InvalidRequest("amount is required")
    try:
        return parse_amount(body["amount"])
    except MoneyError as exc:
        raise InvalidRequest(f"amount {exc}") from exc


def query_int(
    request: Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)
