"""The API's shapes, declared once: request bodies are validated with these
models (ecommerce/api/validation.py) and the OpenAPI document is generated from
them (ecommerce/api/openapi.py). Responses are rendered by
ecommerce/api/render.py; tests check every rendered shape against its model and
schemathesis checks the live server against the document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    WithJsonSchema,
)

from ecommerce.limits import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_AMOUNT,
    MAX_ID,
    MAX_QUANTITY,
    USER_ID_PATTERN,
)
from ecommerce.money import parse_amount

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


def _pattern(compiled: Any) -> str:
    return "^" + compiled.pattern.removesuffix(r"\Z") + "$"


USER_ID_SCHEMA = {"type": "string", "pattern": _pattern(USER_ID_PATTERN)}
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "pattern": _pattern(IDEMPOTENCY_KEY_PATTERN)}
REQUEST_ID_SCHEMA = {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AddToCart(_Body):
    item_id: StrictInt = Field(ge=1, le=MAX_ID)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)


class Pay(_Body):
    amount: Amount


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


class OrderPage(_Answer):
    user_id: str
    orders: list[Order]
    next_before: int | None = Field(
        default=None, description="Pass as ?before= for the next page; absent on the last."
    )


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
