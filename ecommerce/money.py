"""Money is Decimal end to end: parsed exactly, stored as NUMERIC, shown as "1.00"."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ecommerce.limits import MAX_AMOUNT

CENT = Decimal("0.01")
_AMOUNT_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?\Z")


class MoneyError(ValueError):
    """The value is not an amount of money we accept."""


def format_money(value: Decimal) -> str:
    """Render with exactly two decimals: Decimal("1.5") -> "1.50"."""
    return str(value.quantize(CENT))


def parse_amount(raw: object) -> Decimal:
    """Parse a client-supplied amount: a JSON number (already a Decimal or int) or a string.

    Floats never appear: the JSON loader turns every number with a fraction or
    exponent into a Decimal, so "1.10" and 1.10 mean exactly one ten.
    """
    if isinstance(raw, bool):  # bool is an int subclass in Python; true is not money
        raise MoneyError("must be a number or a decimal string")
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, str):
        if not _AMOUNT_TEXT.match(raw):
            raise MoneyError('must be a decimal string such as "12.50"')
        try:
            value = Decimal(raw)
        except InvalidOperation as exc:  # pragma: no cover - the pattern already guards
            raise MoneyError('must be a decimal string such as "12.50"') from exc
    else:
        raise MoneyError("must be a number or a decimal string")

    if not value.is_finite():
        raise MoneyError("must be a finite number")
    if value < 0:
        raise MoneyError("must not be negative")
    if value > MAX_AMOUNT:
        raise MoneyError(f"must not exceed {MAX_AMOUNT}")
    cents = value.quantize(CENT)
    if cents != value:
        raise MoneyError("must have at most two decimal places")
    return cents
