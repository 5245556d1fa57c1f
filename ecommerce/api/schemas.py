"""The API's shapes, declared once: request bodies are validated with these
models (ecommerce/api/validation.py) and the OpenAPI document is generated from
them (ecommerce/api/openapi.py). Responses are rendered by
ecommerce/api/render.py; tests check every rendered shape against its model and
schemathesis checks the live server against the document.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)

from ecommerce.config import MAX_ADMISSION_TTL_S, MAX_ADMITTED
from ecommerce.limits import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_AMOUNT,
    MAX_ID,
    MAX_ORDER_ID,
    MAX_PRICE,
    MAX_QUANTITY,
    USER_ID_PATTERN,
)
from ecommerce.money import MoneyError, parse_amount

#: Money in answers: a string with two decimals, such as "12.50".
MONEY_PATTERN = r"^-?[0-9]+\.[0-9]{2}$"
Money = Annotated[str, Field(pattern=MONEY_PATTERN, examples=["12.50"])]

#: Money a client sends: a JSON number or a decimal string, at most two decimals.
Amount = Annotated[
    Decimal,
    BeforeValidator(parse_amount),  # raises MoneyError (a ValueError) with the reason
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$"},
                {"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT)},
            ],
            "description": "Exactly the cart total: a JSON number or a decimal string, "
            'at most two decimals, such as 12.50 or "12.50".',
        }
    ),
]


def _parse_price(raw: object) -> Decimal:
    price = parse_amount(raw)
    if price > MAX_PRICE:
        raise MoneyError(f"must not exceed {MAX_PRICE}")
    return price


#: An item's price: as an amount, at most MAX_PRICE.
Price = Annotated[
    Decimal,
    BeforeValidator(_parse_price),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,2})?$"},
                {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE)},
            ],
            "description": "A JSON number or a decimal string, at most two decimals.",
        }
    ),
]


def _parse_time(raw: object) -> dt.datetime:
    if not isinstance(raw, str):
        raise ValueError("must be an RFC 3339 time string")
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError("must be an RFC 3339 time, such as 2026-12-12T00:00:00+08:00") from exc
    if at.tzinfo is None:
        raise ValueError("must have a UTC offset, such as 2026-12-12T00:00:00+08:00")
    return at


#: A moment: RFC 3339 with an offset ("Z" or "+08:00"); a time without one is refused.
Time = Annotated[
    dt.datetime,
    BeforeValidator(_parse_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Limit = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]


def _pattern(compiled: Any) -> str:
    return "^" + compiled.pattern.removesuffix(r"\Z") + "$"


USER_ID_SCHEMA = {"type": "string", "pattern": _pattern(USER_ID_PATTERN)}
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
ORDER_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ORDER_ID}
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "pattern": _pattern(IDEMPOTENCY_KEY_PATTERN)}
REQUEST_ID_SCHEMA = {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AddToCart(_Body):
    item_id: StrictInt = Field(ge=1, le=MAX_ID)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)


class Pay(_Body):
    amount: Amount


class NewItem(_Body):
    name: str = Field(min_length=1, max_length=200)
    price: Price
    stock: StrictInt = Field(ge=0, le=MAX_QUANTITY)
    per_user_limit: Limit | None = None
    sale_starts_at: Time | None = None
    sale_ends_at: Time | None = None


class ItemChanges(_Body):
    """Any of these; ``null`` clears a rule (name and price cannot be cleared)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    price: Price | None = None
    per_user_limit: Limit | None = None
    sale_starts_at: Time | None = None
    sale_ends_at: Time | None = None


class Restock(_Body):
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)


class RoomSettings(_Body):
    """An item's waiting room: ``open`` always; any other field left out keeps
    its value (a new room: the defaults); ``rate_per_s: null`` removes a fixed rate."""

    open: StrictBool
    mode: Literal["fifo", "random"] | None = Field(
        default=None,
        description="fifo: arrival order; random: buyers who joined before the sale "
        "opens are drawn into a random order when it opens.",
    )
    rate_per_s: float | None = Field(
        default=None,
        ge=0.001,
        le=100_000,
        description="A fixed admission rate (places per second); null or unset: as fast as "
        "admitted buyers finish, at most max_admitted at once.",
    )
    max_admitted: StrictInt | None = Field(default=None, ge=1, le=MAX_ADMITTED)
    admission_ttl_s: StrictInt | None = Field(default=None, ge=1, le=MAX_ADMISSION_TTL_S)


# --- Answers -----------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Item(_Answer):
    id: int
    name: str
    price: Money
    stock: Money
    per_user_limit: int | None = Field(description="Most units one buyer may hold; null: none.")
    sale_starts_at: str | None = Field(json_schema_extra={"format": "date-time"})
    sale_ends_at: str | None = Field(json_schema_extra={"format": "date-time"})


class Items(RootModel[list[Item]]):
    pass


class Line(_Answer):
    item_id: int
    name: str
    quantity: int
    unit_price: Money
    line_total: Money


class Cart(_Answer):
    user_id: str
    lines: list[Line]
    total: Money


class QuoteLine(Line):
    available: Money
    in_stock: bool
    on_sale: bool


class Quote(_Answer):
    user_id: str
    lines: list[QuoteLine]
    total: Money
    can_pay: bool


class Order(_Answer):
    order_id: int
    user_id: str
    status: str
    total: Money
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    lines: list[Line]
    expires_at: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="While pending: when the reservation lapses and the stock goes back.",
    )
    refund: str | None = Field(
        default=None,
        examples=["pending"],
        description="On a cancel or refund answered 202: the order is refunded and its stock "
        "is back, but the payment provider has not confirmed the refund yet; it is sent again "
        "until it does.",
    )


class PendingOrder(_Answer):
    order_id: int
    status: str = Field(examples=["pending"])
    expires_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})


class WebhookEvent(_Body):
    reference: str = Field(min_length=1, max_length=64, examples=["order-42"])
    status: str = Field(pattern="^(succeeded|declined)$")


class OrderPage(_Answer):
    user_id: str
    orders: list[Order]
    next_before: int | None = Field(
        default=None, description="Pass as ?before= for the next page; absent on the last."
    )


class ItemSales(_Answer):
    item_id: int
    available: Money
    reserved: int = Field(description="Units in pending orders (reserved, not yet paid).")
    sold: int = Field(description="Units in paid orders.")
    refunded: int
    revenue: Money = Field(description="What the paid orders brought in for this item.")
    orders: int = Field(description="Orders holding this item's stock (pending or paid).")


class Place(_Answer):
    item_id: int
    user_id: str
    status: Literal["waiting", "admitted", "sold_out", "before_draw", "lapsed", "done"] = Field(
        description="waiting: poll again after poll_after_ms; admitted: add and pay with "
        "admission_token before admission_expires_at; sold_out: the stock left cannot reach "
        "this place (it may move again if units come back: keep polling); before_draw: a "
        "random room ranks its early buyers when the sale opens; lapsed: the admission "
        "ran out unused; done: paid."
    )
    rank: int | None = Field(description="The place's rank in the line; null before the draw.")
    position: int | None = Field(description="1 + the places ahead (waiting, sold_out).")
    ahead: int | None = Field(description="Places ahead not admitted yet.")
    estimated_wait_s: int | None = Field(
        description="Seconds until admitted at the room's admission rate; null if not known."
    )
    poll_after_ms: int
    place_token: str = Field(description="Send as X-Place-Token when polling.")
    admission_token: str | None = Field(
        default=None, description="Admitted: send as X-Admission-Token with add and pay."
    )
    admission_expires_at: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )


class LeftPlace(_Answer):
    item_id: int
    user_id: str
    status: Literal["left"]


class Room(_Answer):
    item_id: int
    open: bool
    mode: str
    rate_per_s: float | None
    max_admitted: int
    admission_ttl_s: int
    serving: int = Field(description="Places with rank <= serving are admitted.")
    in_flight: int = Field(description="Admitted, not paid, not lapsed.")
    line_length: int = Field(description="Places waiting (not admitted).")
    sold_out_after: int | None = Field(
        description="Ranks above it cannot be reached by the stock left."
    )
    admission_rate_per_s: float | None = Field(description="The last minute's admissions.")
    estimated_wait_s: int | None = Field(description="The wait told to the back of the line.")
    drawn_at: str | None = Field(json_schema_extra={"format": "date-time"})
    refreshed_at: str = Field(json_schema_extra={"format": "date-time"})


class ErrorBody(_Answer):
    code: str = Field(examples=["insufficient_stock"])
    message: str
    details: Any = None


class Error(_Answer):
    error: ErrorBody


class Health(_Answer):
    status: str


class Ready(_Answer):
    status: str
    schema_: str = Field(alias="schema")
