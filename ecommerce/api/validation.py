"""Request parsing: everything a client sends is checked here, before any SQL runs.

Bodies are validated by the models of ecommerce/api/schemas.py, the same ones
the OpenAPI document is generated from; their errors become the messages the
API has always given ("quantity must be between 1 and 99999999").
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, TypeVar

from flask import Request, current_app
from pydantic import BaseModel, ValidationError

from ecommerce.api import schemas
from ecommerce.errors import InvalidRequest
from ecommerce.limits import (
    ADMISSION_TOKEN_HEADER,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ADMISSION_TOKENS,
    MAX_TOKEN_LENGTH,
    PLACE_TOKEN_HEADER,
    USER_ID_PATTERN,
    USER_ID_RULE,
)
from ecommerce.services.rooms import RoomOptions

B = TypeVar("B", bound=BaseModel)


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


def admission_tokens(request: Request) -> tuple[str, ...]:
    """The X-Admission-Token headers' tokens (repeated, or comma-separated)."""
    tokens = tuple(
        token.strip()
        for header in request.headers.getlist(ADMISSION_TOKEN_HEADER)
        for token in header.split(",")
        if token.strip()
    )
    if len(tokens) > MAX_ADMISSION_TOKENS or any(len(t) > MAX_TOKEN_LENGTH for t in tokens):
        raise InvalidRequest(
            f"at most {MAX_ADMISSION_TOKENS} {ADMISSION_TOKEN_HEADER}s of at most "
            f"{MAX_TOKEN_LENGTH} characters"
        )
    return tokens


def place_token(request: Request) -> str:
    token = (request.headers.get(PLACE_TOKEN_HEADER) or "").strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRequest(
            f"the {PLACE_TOKEN_HEADER} header (the join's place_token) is required"
        )
    return token


def room_options(raw: dict[str, Any]) -> RoomOptions:
    """An item's waiting room as the admin API's PUT and the console send it
    (schemas.RoomSettings): ``rate_per_s`` sent as null removes a fixed rate."""
    sent = body(schemas.RoomSettings, raw)
    return RoomOptions(
        open=sent.open,
        mode=sent.mode,
        rate_per_s=Decimal(str(sent.rate_per_s)) if sent.rate_per_s is not None else None,
        max_admitted=sent.max_admitted,
        admission_ttl_s=sent.admission_ttl_s,
        clear_rate="rate_per_s" in sent.model_fields_set and sent.rate_per_s is None,
    )


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


def body(model: type[B], raw: dict[str, Any]) -> B:
    """``raw`` validated by ``model`` (ecommerce/api/schemas.py), or InvalidRequest
    naming the first field at fault, in the field order of the model."""
    try:
        return model.model_validate(raw)
    except ValidationError as invalid:
        raise InvalidRequest(_message(model, invalid.errors()[0])) from invalid


def _message(model: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    if not error["loc"]:  # a rule across fields
        return str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
    name = str(error["loc"][0])
    if kind == "missing":
        return f"{name} is required"
    if kind == "int_type":
        return f"{name} must be a JSON integer"
    if kind in {"greater_than_equal", "less_than_equal"}:
        low, high = _bounds(model, name, "minimum", "maximum")
        return f"{name} must be between {low} and {high}"
    if kind == "value_error":  # a parser's own reason, e.g. the amount's MoneyError
        return f"{name} {error['ctx']['error']}"
    if kind == "string_type":
        return f"{name} must be a string"
    if kind in {"string_too_short", "string_too_long"}:
        low, high = _bounds(model, name, "minLength", "maxLength")
        return f"{name} must be {low} to {high} characters"
    return f"{name} is not valid"


@functools.cache
def _bounds(model: type[BaseModel], name: str, low: str, high: str) -> tuple[Any, Any]:
    """A field's bounds as its JSON Schema states them (the document's own words),
    looking inside ``anyOf`` for optional fields."""
    schema = model.model_json_schema()["properties"][name]
    for option in [schema, *schema.get("anyOf", [])]:
        if low in option or high in option:
            return option.get(low), option.get(high)
    return None, None


def item_changes(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of a PATCH that were sent (``null`` clears a rule)."""
    changes = body(schemas.ItemChanges, raw)
    sent = {name: getattr(changes, name) for name in changes.model_fields_set}
    for required in ("name", "price"):
        if required in sent and sent[required] is None:
            raise InvalidRequest(f"{required} cannot be cleared")
    return sent


def add_to_cart(raw: dict[str, Any]) -> tuple[int, int]:
    request = body(schemas.AddToCart, raw)
    return request.item_id, request.quantity


def payment_amount(raw: dict[str, Any]) -> Decimal:
    return body(schemas.Pay, raw).amount


def query_int(
    request: Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)
